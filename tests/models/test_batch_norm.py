"""Settling BatchNorm after training from scratch: population statistics and freezing."""

import glob
import os

import keras
import keras_resnet.layers
import numpy as np
import pytest

from object_detector_retinanet.keras_retinanet.models import batch_norm
from object_detector_retinanet.keras_retinanet.models.backbone import patch_keras_resnet


def _tiny_model():
    patch_keras_resnet()
    inputs = keras.Input((2, 1, 1))
    hidden = keras.layers.Activation("linear", name="identity")(inputs)
    outputs = keras_resnet.layers.BatchNormalization(freeze=False, name="bn")(hidden)
    return keras.Model(inputs, outputs)


def test_population_statistics_of_two_batches():
    model = _tiny_model()
    # batch A: pixels 0, 2 (mean 1, variance 1); batch B: pixels 4, 4 (mean 4, variance 0).
    batches = [np.array([0.0, 2.0]).reshape(1, 2, 1, 1), np.array([4.0, 4.0]).reshape(1, 2, 1, 1)]
    assert batch_norm.estimate_statistics(model, batches) == 2
    layer = model.get_layer("bn")
    # all four pixels 0, 2, 4, 4: mean 2.5; variance (2.5² + 0.5² + 1.5² + 1.5²) / 4 = 2.75
    # = mean of the batch variances (0.5) + variance of the batch means 1 and 4 (2.25)
    np.testing.assert_allclose(layer.moving_mean.numpy(), [2.5], rtol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(), [2.75], rtol=1e-6)


def test_frozen_layers_normalise_with_the_stored_statistics_and_keep_learning_scale():
    model = _tiny_model()
    layer = model.get_layer("bn")
    layer.moving_mean.assign([2.5])
    layer.moving_variance.assign([2.75])
    assert not batch_norm.is_frozen(model)
    batch_norm.set_frozen(model)
    assert batch_norm.is_frozen(model) and layer.trainable  # scale and offset still learn
    x = np.array([0.0, 2.0]).reshape(1, 2, 1, 1)
    out = model(x, training=True).numpy().ravel()
    # (x - 2.5) / sqrt(2.75 + 1e-3): keras-resnet's default epsilon is Keras' 1e-3
    np.testing.assert_allclose(out, (np.array([0.0, 2.0]) - 2.5) / np.sqrt(2.75 + 1e-3), rtol=1e-5)
    np.testing.assert_allclose(layer.moving_mean.numpy(), [2.5])  # no update while frozen


def _moving_stats(model, path):
    """layer name -> (moving_mean, moving_variance) of every BatchNorm layer stored in ``path``."""
    model.load_weights(path)
    return {
        layer.name: (layer.moving_mean.numpy(), layer.moving_variance.numpy())
        for layer in batch_norm.batch_norm_layers(model)
    }


@pytest.mark.slow
def test_freeze_bn_after_settles_stores_and_resumes(tiny_dataset, tmp_path, monkeypatch):
    from object_detector_retinanet.keras_retinanet.bin import train
    from object_detector_retinanet.keras_retinanet.models.weights import read_snapshot_attrs
    from object_detector_retinanet.keras_retinanet.training import STAGE1, driver

    monkeypatch.setenv("SKU110K_ROOT", str(tiny_dataset))
    flags = [
        "--image-min-side",
        "128",
        "--image-max-side",
        "128",
        "--verbose",
        "0",
        "--seed",
        "0",
        "--no-flip",
        "--snapshot-path",
        str(tmp_path),
        "--tensorboard-dir",
        "",
    ]
    train.main(
        [
            "--no-weights",
            "--epochs",
            "2",
            "--steps",
            "1",
            "--freeze-bn-after",
            "1",
            "--bn-images",
            "2",
            *flags,
            "csv",
        ]
    )
    first, second = sorted(glob.glob(os.path.join(tmp_path, "*", "resnet50_csv_0*.weights.h5")))
    assert read_snapshot_attrs(first)["sku110k_bn_settled"] == 0
    assert read_snapshot_attrs(second)["sku110k_bn_settled"] == 1

    # The statistics stored after epoch 2 are the population statistics of epoch 1's network on
    # the same two training images (frozen during epoch 2, so untouched by its step).
    args = train.parse_args(["--no-weights", "--seed", "0", *flags, "csv"])
    model, _ = STAGE1.build(args, 1)
    stored = _moving_stats(model, second)
    model.load_weights(first)
    generator, _ = driver.create_generators(args, STAGE1.targets_fn)
    batch_norm.estimate_statistics(model, driver.settle_batches(generator, 2, seed=0))
    assert len(stored) == len(batch_norm.batch_norm_layers(model)) == 53  # ResNet50's
    for layer in batch_norm.batch_norm_layers(model):
        mean, variance = stored[layer.name]
        np.testing.assert_allclose(mean, layer.moving_mean.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(variance, layer.moving_variance.numpy(), rtol=1e-4, atol=1e-5)

    # Resuming a settled snapshot keeps BatchNorm frozen: a third epoch leaves the statistics.
    train.main(
        [
            "--snapshot",
            second,
            "--epochs",
            "3",
            "--steps",
            "1",
            "--freeze-bn-after",
            "1",
            *flags,
            "csv",
        ]
    )
    (third,) = glob.glob(os.path.join(tmp_path, "*", "resnet50_csv_03.weights.h5"))
    assert read_snapshot_attrs(third)["sku110k_bn_settled"] == 1
    after = _moving_stats(model, third)
    for name, (mean, variance) in stored.items():
        np.testing.assert_array_equal(after[name][0], mean)
        np.testing.assert_array_equal(after[name][1], variance)
