"""The in-graph anchor generator (§5.3, §5.6, §5.7; bug B26).

Owns :class:`Anchors`, one layer per pyramid level (``anchors_0..4`` in the stage-2 and inference
graphs). The base anchors come from the NumPy
:func:`~object_detector_retinanet.keras_retinanet.utils.anchors.generate_anchors`, so the graph and
the training targets share one definition; only the half-stride shift over the (dynamic) feature map
is done in the graph. A test asserts that the layers equal ``anchors_for_shape`` level by level.
"""

import keras
import numpy as np
from keras import ops

from object_detector_retinanet.keras_retinanet.config import AnchorConfig
from object_detector_retinanet.keras_retinanet.utils.anchors import generate_anchors


@keras.saving.register_keras_serializable(package="sku110k")
class Anchors(keras.layers.Layer):
    """Anchors of one pyramid level, shifted over its feature map.

    Input: features ``(B, H, W, C)`` (only the shape is used; B, H and W may be dynamic).
    Output: ``(B, H * W * A, 4)`` float32 anchors ``(x1, y1, x2, y2)`` in input-image pixels, in the
    order row y → column x → anchor (ratio-major), which matches the heads' reshape
    ``(H, W, A * c) → (-1, c)``. Anchor ``a`` at cell ``(iy, ix)`` is the base anchor ``a`` centred
    on ``((ix + 0.5) * stride, (iy + 0.5) * stride)`` (§5.3, KEEP: half a stride in).

    Args:
        size: base anchor side of this level (32..512 for P3..P7).
        stride: feature stride of this level (8..128 for P3..P7).
        ratios: anchor ratios ``h / w``; None means ``AnchorConfig().ratios`` (B26).
        scales: anchor scales; None means ``AnchorConfig().scales`` (B26).
        **kwargs: standard ``keras.layers.Layer`` arguments (``name``, ...); ``dtype`` defaults to
            float32 even under a mixed-precision policy.
    """

    def __init__(self, size, stride, ratios=None, scales=None, **kwargs):
        kwargs.setdefault("dtype", "float32")  # pixel coordinates: never float16
        super().__init__(**kwargs)
        defaults = AnchorConfig()
        # B26: the original crashed on None ratios/scales; default to the recipe's values.
        self.size = size
        self.stride = stride
        self.ratios = [float(r) for r in (defaults.ratios if ratios is None else ratios)]
        self.scales = [float(s) for s in (defaults.scales if scales is None else scales)]
        self.num_anchors = len(self.ratios) * len(self.scales)
        base = generate_anchors(
            base_size=size, ratios=np.asarray(self.ratios), scales=np.asarray(self.scales)
        )
        self._base_anchors = np.asarray(base, dtype="float32").reshape(self.num_anchors, 4)

    def call(self, features):
        shape = ops.shape(features)
        batch_size, height, width = shape[0], shape[1], shape[2]
        stride = float(self.stride)
        # Cell centres, half a stride in from the origin (§5.3).
        shift_x = (ops.cast(ops.arange(0, width), "float32") + 0.5) * stride  # (W,)
        shift_y = (ops.cast(ops.arange(0, height), "float32") + 0.5) * stride  # (H,)
        grid_x, grid_y = ops.meshgrid(shift_x, shift_y, indexing="xy")  # each (H, W)
        grid_x = ops.reshape(grid_x, (-1,))
        grid_y = ops.reshape(grid_y, (-1,))
        shifts = ops.stack([grid_x, grid_y, grid_x, grid_y], axis=1)  # (H*W, 4), y-major
        base = ops.convert_to_tensor(self._base_anchors)  # (A, 4)
        anchors = ops.expand_dims(shifts, 1) + ops.expand_dims(base, 0)  # (H*W, A, 4)
        anchors = ops.reshape(anchors, (1, -1, 4))  # (1, H*W*A, 4)
        return ops.broadcast_to(anchors, (batch_size, ops.shape(anchors)[1], 4))

    def compute_output_shape(self, input_shape):
        height, width = input_shape[1], input_shape[2]
        if height is None or width is None:
            return (input_shape[0], None, 4)
        return (input_shape[0], height * width * self.num_anchors, 4)

    def compute_output_spec(self, features):
        return keras.KerasTensor(self.compute_output_shape(features.shape), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "size": self.size,
                "stride": self.stride,
                "ratios": list(self.ratios),
                "scales": list(self.scales),
            }
        )
        return config
