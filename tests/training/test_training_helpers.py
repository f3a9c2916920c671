"""Pieces of the shared training driver: divergence guard, fixed-step epochs, weights download."""

import math

import keras
import numpy as np
import pytest

from object_detector_retinanet.keras_retinanet.models import backbone
from object_detector_retinanet.keras_retinanet.training import callbacks, driver


def test_non_finite_loss_stops_training_and_is_remembered():
    guard = callbacks.NonFiniteGuard()
    callback = guard
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    callback.set_model(model)
    model.stop_training = False
    callback.on_train_batch_end(0, {"loss": 1.5})
    assert not guard.diverged and not model.stop_training
    callback.on_train_batch_end(7, {"loss": math.nan})
    assert guard.diverged and guard.where == 7 and model.stop_training


class _Groups:
    """A stand-in generator whose batch i is just i."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return np.array([i]), {"only": np.array([i])}


def test_fixed_steps_reshuffles_each_pass_and_resumes_the_sequence():
    steps = driver.fixed_steps(_Groups(4), steps=6, seed=1)
    epoch0 = [int(steps[i][0][0]) for i in range(6)]
    steps.on_epoch_end()
    epoch1 = [int(steps[i][0][0]) for i in range(6)]
    seq = epoch0 + epoch1  # 12 steps = 3 full passes of 4 groups, each a permutation
    for p in range(3):
        assert sorted(seq[4 * p : 4 * p + 4]) == [0, 1, 2, 3]
    assert seq[0:4] != seq[4:8] or seq[4:8] != seq[8:12]  # passes are reshuffled
    resumed = driver.fixed_steps(_Groups(4), steps=6, seed=1, initial_epoch=1)
    assert [int(resumed[i][0][0]) for i in range(6)] == epoch1
    # a one-output model gets a bare array target, not a one-key dict
    assert isinstance(steps[0][1], np.ndarray)


def test_imagenet_download_failure_tells_the_user_what_to_do(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(backbone.keras.utils, "get_file", offline)
    with pytest.raises(RuntimeError, match="--imagenet-weights PATH") as info:
        backbone.download_imagenet("resnet50")
    assert "ResNet-50-model.keras.h5" in str(info.value) and "--no-weights" in str(info.value)


def test_unknown_backbone_is_rejected():
    with pytest.raises(ValueError, match="resnet50"):
        backbone.validate_backbone("vgg16")


def test_mixed_precision_keeps_float32_outputs():
    from object_detector_retinanet.keras_retinanet.models.retinanet import build_retinanet

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_retinanet(num_classes=1)
        assert model.get_layer("P3").compute_dtype == "float16"
        assert all(o.dtype == "float32" for o in model.outputs)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_fixed_steps_pickles_for_process_workers():
    import pickle

    steps = driver.fixed_steps(_Groups(4), steps=3, seed=2, initial_epoch=1)
    clone = pickle.loads(pickle.dumps(steps))
    assert [int(clone[i][0][0]) for i in range(3)] == [int(steps[i][0][0]) for i in range(3)]
