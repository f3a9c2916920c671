"""Box decoding and clipping layers (§5.6, §5.7).

Owns :class:`RegressBoxes` (layer ``boxes``: the in-graph inverse of the corner-offset encoding
:func:`~object_detector_retinanet.keras_retinanet.utils.anchors.bbox_transform`) and
:class:`ClipBoxes` (layer ``clipped_boxes`` of the inference graph). Both are ``keras.ops`` only.
"""

import keras
from keras import ops

from object_detector_retinanet.keras_retinanet.config import TargetConfig


def _as_config_value(value):
    """A float, or a list of 4 floats, for JSON-friendly configs."""
    if isinstance(value, (int, float)):
        return float(value)
    values = [float(v) for v in value]
    if len(values) != 4:
        raise ValueError(f"expected a number or 4 numbers (x1, y1, x2, y2), got {value!r}")
    return values


@keras.saving.register_keras_serializable(package="sku110k")
class RegressBoxes(keras.layers.Layer):
    """Apply corner-offset deltas to anchors (§5.7 step 2).

    Inputs: ``[anchors (B, N, 4), deltas (B, N, 4)]``. Output: boxes ``(B, N, 4)``,
    ``(x1, y1, x2, y2)`` pixels, with ``x1 = ax1 + (d_x1 * std + mean) * aw``,
    ``y1 = ay1 + (d_y1 * std + mean) * ah`` and likewise for x2, y2, where ``aw = ax2 - ax1`` and
    ``ah = ay2 - ay1``. Equals the NumPy ``bbox_transform_inv``.

    Args:
        mean: delta mean, a number or 4 numbers (``TargetConfig.bbox_mean``, 0).
        std: delta std, a number or 4 numbers (``TargetConfig.bbox_std``, 0.2 as fizyr and the
            original).
        **kwargs: standard ``keras.layers.Layer`` arguments; ``dtype`` defaults to float32 even
            under a mixed-precision policy (float16 inputs are upcast: boxes need sub-pixel
            precision).
    """

    def __init__(self, mean=TargetConfig.bbox_mean, std=TargetConfig.bbox_std, **kwargs):
        kwargs.setdefault("dtype", "float32")  # pixel coordinates: never float16
        super().__init__(**kwargs)
        self.mean = _as_config_value(mean)
        self.std = _as_config_value(std)

    def call(self, inputs):
        anchors, deltas = inputs
        anchors = ops.cast(anchors, deltas.dtype)
        mean = ops.convert_to_tensor(self.mean, dtype=deltas.dtype)
        std = ops.convert_to_tensor(self.std, dtype=deltas.dtype)
        deltas = deltas * std + mean
        widths = anchors[..., 2] - anchors[..., 0]
        heights = anchors[..., 3] - anchors[..., 1]
        scale = ops.stack([widths, heights, widths, heights], axis=-1)  # (B, N, 4)
        return anchors + deltas * scale

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[1])

    def get_config(self):
        config = super().get_config()
        config.update({"mean": self.mean, "std": self.std})
        return config


@keras.saving.register_keras_serializable(package="sku110k")
class ClipBoxes(keras.layers.Layer):
    """Clip boxes to the network input (§5.7 step 3).

    Inputs: ``[image (B, H, W, C), boxes (B, N, 4)]``. Output: boxes ``(B, N, 4)`` with x clipped to
    ``[0, W]`` and y to ``[0, H]``. QUIRK (KEEP): the upper bound is W / H, not W − 1 / H − 1.

    Args:
        **kwargs: standard ``keras.layers.Layer`` arguments; ``dtype`` defaults to float32.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")  # pixel coordinates: never float16
        super().__init__(**kwargs)

    def call(self, inputs):
        image, boxes = inputs
        shape = ops.shape(image)
        height = ops.cast(shape[1], boxes.dtype)
        width = ops.cast(shape[2], boxes.dtype)
        x1 = ops.clip(boxes[..., 0], 0.0, width)
        y1 = ops.clip(boxes[..., 1], 0.0, height)
        x2 = ops.clip(boxes[..., 2], 0.0, width)
        y2 = ops.clip(boxes[..., 3], 0.0, height)
        return ops.stack([x1, y1, x2, y2], axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[1])
