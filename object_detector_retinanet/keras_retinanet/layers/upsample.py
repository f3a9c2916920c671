"""Nearest-neighbour upsampling of the feature pyramid's top-down path (§5.2).

Owns :class:`UpsampleLike` (layers ``P5_upsampled`` and ``P4_upsampled``). The original resized
with TF1's ``tf.image.resize_images(..., NEAREST_NEIGHBOR)``, i.e. ``align_corners=False`` with the
legacy ``half_pixel_centers=False``: output pixel ``i`` reads source pixel ``floor(i * in / out)``.
TF2's ``tf.image.resize(method="nearest")`` uses half-pixel centres and differs whenever a size is
odd, and its gradient (``ResizeNearestNeighborGrad``) has no XLA kernel, which breaks
``jit_compile=True`` training (Keras' default whenever a GPU is visible). This layer therefore
gathers rows and columns by index: exact, shape-agnostic and differentiable under XLA.
"""

import keras
from keras import ops


def _nearest_indices(in_size, out_size):
    """``floor(i * in_size / out_size)`` for ``i`` in ``[0, out_size)``, in integer arithmetic.

    Args:
        in_size: source length (a scalar int tensor or int).
        out_size: target length (a scalar int tensor or int).

    Returns:
        int32 indices ``(out_size,)``, all in ``[0, in_size - 1]``.
    """
    in_size = ops.cast(in_size, "int32")
    out_size = ops.cast(out_size, "int32")
    index = ops.floor_divide(ops.arange(0, out_size, dtype="int32") * in_size, out_size)
    # TF1 also clamped to in_size - 1; floor(i * in / out) < in already, kept for safety.
    return ops.minimum(index, in_size - 1)


@keras.saving.register_keras_serializable(package="sku110k")
class UpsampleLike(keras.layers.Layer):
    """Resize ``source`` to ``target``'s spatial size with TF1 legacy nearest-neighbour sampling.

    Inputs: ``[source (B, h, w, C), target (B, H, W, C')]`` (only target's shape is used). Output:
    ``(B, H, W, C)`` with ``out[:, i, j] = source[:, floor(i * h / H), floor(j * w / W)]``.

    Args:
        **kwargs: standard ``keras.layers.Layer`` arguments.
    """

    def call(self, inputs):
        source, target = inputs
        source_shape = ops.shape(source)
        target_shape = ops.shape(target)
        rows = _nearest_indices(source_shape[1], target_shape[1])
        cols = _nearest_indices(source_shape[2], target_shape[2])
        # A gather (not tf.image.resize) so the gradient is a segment sum, which XLA compiles.
        output = ops.take(source, rows, axis=1)
        return ops.take(output, cols, axis=2)

    def compute_output_shape(self, input_shape):
        source_shape, target_shape = input_shape
        return (source_shape[0], target_shape[1], target_shape[2], source_shape[-1])
