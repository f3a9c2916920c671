"""BatchNorm for training from random weights: learn with batch statistics, then settle.

The paper's recipe starts from ImageNet weights and keeps every BatchNorm layer frozen: a fixed
affine map with the stored statistics. From random weights (``train.py --no-weights``, the demo,
CPU users without the ImageNet file) BatchNorm must learn, and at SKU-110K's batch size of 1 its
"batch" statistics are those of a single image. A network trained that way leans on per-image
normalisation, which no set of stored statistics reproduces at inference: on the synthetic shelves
a model scoring AP 0.56 with per-image statistics scored 0.29 with its moving averages and 0.24
with exact population statistics (``docs/training-from-scratch.md``).

The remedy here is to *settle* BatchNorm for the last part of training:

1. :func:`estimate_statistics` runs the network in training mode over a sample of training images
   and measures the population mean and variance of every BatchNorm layer's input (the mean of the
   per-batch means; the mean of the per-batch variances plus the variance of the means), as
   precise-BN does (Wu & Johnson, 2021);
2. :func:`set_frozen` then makes every layer normalise with those stored statistics, in training
   and at inference alike, while its scale and offset go on learning;
3. training continues for a few epochs, so the layers after each BatchNorm adapt to the fixed
   statistics. The result is an ordinary model whose inference needs nothing special.
"""

from __future__ import annotations

import keras
import keras_resnet.layers
import numpy as np

from object_detector_retinanet.keras_retinanet.models.weights import iter_layers


def batch_norm_layers(model) -> list:
    """The keras-resnet BatchNormalization layers of ``model`` (the backbone's), in graph order."""
    return [
        layer
        for layer in iter_layers(model)
        if isinstance(layer, keras_resnet.layers.BatchNormalization)
    ]


def is_frozen(model) -> bool:
    """True when every BatchNorm layer of ``model`` uses its stored statistics."""
    return all(layer.freeze for layer in batch_norm_layers(model))


def set_frozen(model, frozen: bool = True) -> None:
    """Make every BatchNorm layer normalise with its stored statistics (``frozen``) or with the
    batch's. Scale and offset stay trainable as they were; a compiled model must rebuild its train
    function (``model.make_train_function(force=True)``) for the change to take effect."""
    for layer in batch_norm_layers(model):
        layer.freeze = frozen


def estimate_statistics(model, batches) -> int:
    """Store the population statistics of every BatchNorm layer's input, measured on ``batches``.

    Runs ``model`` in training mode (each layer normalised by its batch's statistics, as during
    training) over every batch and records, per layer and channel, the batch mean ``m_b`` and the
    batch variance ``v_b``. The stored statistics become ``mean(m_b)`` and
    ``mean(v_b) + var(m_b)``: the mean and variance over all the pixels of all the batches.

    Args:
        model: a functional model containing keras-resnet BatchNormalization layers.
        batches: iterable of input arrays ``(B, H, W, 3)`` (or ``(inputs, targets)`` pairs).

    Returns:
        The number of batches used.
    """
    import tensorflow as tf

    layers = batch_norm_layers(model)
    probe = keras.Model(model.inputs, [layer.input for layer in layers])

    @tf.function(reduce_retracing=True)
    def moments(inputs):
        outputs = tf.nest.flatten(probe(inputs, training=True))  # a bare tensor for one layer
        return [tf.nn.moments(tf.cast(x, tf.float32), axes=[0, 1, 2]) for x in outputs]

    means = [[] for _ in layers]
    variances = [[] for _ in layers]
    count = 0
    for batch in batches:
        inputs = batch[0] if isinstance(batch, tuple) else batch
        for i, (mean, variance) in enumerate(moments(tf.constant(inputs))):
            means[i].append(mean.numpy())
            variances[i].append(variance.numpy())
        count += 1
    if count == 0:
        raise ValueError("estimate_statistics needs at least one batch")
    for layer, layer_means, layer_variances in zip(layers, means, variances):
        layer_means = np.asarray(layer_means, dtype=np.float64)
        variance = np.mean(layer_variances, axis=0) + layer_means.var(axis=0)
        layer.moving_mean.assign(layer_means.mean(axis=0).astype(np.float32))
        layer.moving_variance.assign(variance.astype(np.float32))
    return count


class SettleBatchNorm(keras.callbacks.Callback):
    """At the start of epoch ``epoch`` (0-based), estimate and freeze BatchNorm's statistics.

    Does nothing once the model's BatchNorm is frozen (a resumed run that had settled already).

    Args:
        epoch: the first epoch trained with settled statistics (``--freeze-bn-after``).
        batches: a callable returning the batches to measure on (called once, when settling).
    """

    def __init__(self, epoch: int, batches):
        super().__init__()
        self.epoch = epoch
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        if epoch < self.epoch or is_frozen(self.model):
            return
        count = estimate_statistics(self.model, self.batches())
        set_frozen(self.model, True)
        self.model.make_train_function(force=True)  # retrace: BatchNorm now uses stored statistics
        print(f"\nEpoch {epoch + 1}: BatchNorm statistics estimated on {count} batches and frozen.")
