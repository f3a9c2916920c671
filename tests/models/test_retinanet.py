"""Stage-1 RetinaNet: names, shapes, initial values, keras-resnet under Keras 3, weight files."""

import math

import h5py
import keras
import numpy as np
import pytest

from object_detector_retinanet.keras_retinanet import config
from object_detector_retinanet.keras_retinanet.models.backbone import (
    SCRATCH_BN_MOMENTUM,
    patch_keras_resnet,
    resnet_backbone,
)
from object_detector_retinanet.keras_retinanet.models.retinanet import build_retinanet
from object_detector_retinanet.keras_retinanet.models.soft_iou import add_iou_head, iter_layers
from object_detector_retinanet.keras_retinanet.models.weights import (
    file_format,
    load_weights_by_name,
)
from object_detector_retinanet.keras_retinanet.utils.anchors import anchors_for_shape


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return build_retinanet(num_classes=1, freeze_bn=True)


def test_outputs_names_and_shapes(model):
    assert model.output_names == [config.REGRESSION, config.CLASSIFICATION]
    regression, classification = model.predict_on_batch(np.zeros((1, 128, 96, 3), "float32"))
    n = len(anchors_for_shape((128, 96)))  # one row per anchor, in the same order
    assert regression.shape == (1, n, 4)
    assert classification.shape == (1, n, 1)


def test_pyramid_and_head_names_are_the_contract(model):
    names = {layer.name for layer in iter_layers(model)}
    for name in (
        "P3",
        "P4",
        "P5",
        "P6",
        "P7",
        "C6_relu",
        "C5_reduced",
        "P5_upsampled",
        "regression_submodel",
        "classification_submodel",
        "pyramid_regression_0",
        "pyramid_classification",
        "conv1",
        "bn_conv1",
        "res2a_branch2a",
        "res5c_branch2c",
    ):
        assert name in names
    # Nothing but the Soft-IoU head may contain "iou" (the stage-2 freezing rule).
    assert not [n for n in names if config.IOU_SUBSTRING in n]


def test_classification_starts_at_prior_probability(model):
    layer = model.get_layer("classification_submodel").get_layer("pyramid_classification")
    kernel, bias = layer.get_weights()
    assert np.all(kernel == 0)
    np.testing.assert_allclose(bias, -math.log(99), rtol=1e-6)  # -log((1 - 0.01) / 0.01)
    _, classification = model.predict_on_batch(np.random.rand(1, 64, 64, 3).astype("float32"))
    np.testing.assert_allclose(classification, 0.01, rtol=1e-5)


def test_p6_is_computed_from_c5_not_p5(model):
    p6 = model.get_layer("P6")
    assert p6.strides == (2, 2)
    # The input of P6 is the last ResNet stage (C5: 2048 channels), not P5 (256 channels).
    assert p6.input.shape[-1] == 2048


def test_keras_resnet_builds_and_frozen_bn_does_not_update():
    patch_keras_resnet()
    patch_keras_resnet()  # idempotent
    inputs = keras.Input((None, None, 3))
    resnet, (c3, c4, c5) = resnet_backbone(inputs, freeze_bn=True)
    assert (c3.shape[-1], c4.shape[-1], c5.shape[-1]) == (512, 1024, 2048)
    assert resnet.count_params() == 23_561_152  # ResNet50 without top: keras-resnet 0.2.0
    bn = resnet.get_layer("bn_conv1")
    before = keras.ops.convert_to_numpy(bn.moving_mean).copy()
    resnet(np.random.rand(1, 64, 64, 3).astype("float32") * 50, training=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn.moving_mean), before)


def test_learning_bn_uses_scratch_momentum_and_updates():
    inputs = keras.Input((None, None, 3))
    resnet, _ = resnet_backbone(inputs, freeze_bn=False, bn_momentum=SCRATCH_BN_MOMENTUM)
    bn = resnet.get_layer("bn_conv1")
    assert bn.trainable and bn.momentum == 0.9
    resnet(np.random.rand(1, 64, 64, 3).astype("float32") * 50, training=True)
    # moving_mean = 0.9 * 0 + 0.1 * batch_mean != 0
    assert np.abs(keras.ops.convert_to_numpy(bn.moving_mean)).max() > 0


def _write_keras2_h5(path, layers):
    """Write a Keras-2.2.4-style full-model HDF5: model_weights/<group>/<inner>/<var>:0."""
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights")
        root.attrs["layer_names"] = [g.encode() for g in layers]
        for group_name, weights in layers.items():
            group = root.create_group(group_name)
            group.attrs["weight_names"] = [name.encode() for name in weights]
            for name, value in weights.items():
                group.create_dataset(name, data=value)


def test_keras2_full_model_h5_loads_by_name_into_nested_layers(model, tmp_path):
    conv1 = np.full((7, 7, 3, 64), 0.25, "float32")
    gamma = np.arange(64, dtype="float32")
    head = np.full((3, 3, 256, 256), -0.5, "float32")
    path = tmp_path / "resnet50_csv_10.h5"
    _write_keras2_h5(
        path,
        {
            "conv1": {"conv1/kernel:0": conv1},
            "bn_conv1": {
                "bn_conv1/gamma:0": gamma,
                "bn_conv1/beta:0": np.ones(64, "float32"),
                "bn_conv1/moving_mean:0": np.full(64, 2.0, "float32"),
                "bn_conv1/moving_variance:0": np.full(64, 3.0, "float32"),
            },
            # A nested sub-model lists its inner layers' weights.
            "regression_submodel": {
                "pyramid_regression_0/kernel:0": head,
                "pyramid_regression_0/bias:0": np.full(256, 0.125, "float32"),
            },
            "not_in_our_model": {"not_in_our_model/kernel:0": np.zeros((2, 2), "float32")},
        },
    )
    assert file_format(path) == "keras2"
    report = load_weights_by_name(model, path)
    assert sorted(report["loaded"]) == ["bn_conv1", "conv1", "pyramid_regression_0"]
    np.testing.assert_array_equal(model.get_layer("conv1").get_weights()[0], conv1)
    bn = model.get_layer("bn_conv1")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn.gamma), gamma)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn.moving_variance), 3.0)
    inner = model.get_layer("regression_submodel").get_layer("pyramid_regression_0")
    np.testing.assert_array_equal(inner.get_weights()[0], head)
    np.testing.assert_array_equal(inner.get_weights()[1], 0.125)


def test_keras2_shape_mismatch_is_skipped_or_raises(model, tmp_path):
    path = tmp_path / "bad.h5"
    _write_keras2_h5(
        path,
        {
            "conv1": {"conv1/kernel:0": np.zeros((3, 3, 3, 64), "float32")},
            "P3": {
                "P3/kernel:0": np.zeros((3, 3, 256, 256), "float32"),
                "P3/bias:0": np.zeros(256, "float32"),
            },
        },
    )
    report = load_weights_by_name(model, path, skip_mismatch=True)
    assert report["mismatched"] == ["conv1"] and report["loaded"] == ["P3"]
    with pytest.raises(ValueError, match="conv1"):
        load_weights_by_name(model, path, skip_mismatch=False)


def test_stage1_keras3_weights_load_by_name_under_a_fresh_iou_head(model, tmp_path):
    path = tmp_path / "resnet50_csv_01.weights.h5"
    model.save_weights(path)
    assert file_format(path) == "keras3"
    keras.utils.set_random_seed(1)
    other = add_iou_head(build_retinanet(num_classes=1), num_classes=1)
    iou_before = [w.copy() for w in other.get_layer("iou_submodel").get_weights()]
    report = load_weights_by_name(other, path)
    assert not report["mismatched"]
    assert sorted(report["missing"]) == sorted(
        ["pyramid_iou_0", "pyramid_iou_1", "pyramid_iou_2", "pyramid_iou_3", "pyramid_iou"]
    )
    for a, b in zip(model.get_weights(), other.get_weights()):  # base weights come first
        np.testing.assert_array_equal(a, b)
    for a, b in zip(iou_before, other.get_layer("iou_submodel").get_weights()):
        np.testing.assert_array_equal(a, b)  # the head keeps its fresh initialisation


def test_loading_an_unrelated_file_fails_clearly(model, tmp_path):
    path = tmp_path / "other.h5"
    _write_keras2_h5(path, {"dense": {"dense/kernel:0": np.zeros((2, 2), "float32")}})
    with pytest.raises(ValueError, match="no layer of this file matches"):
        load_weights_by_name(model, path)


def test_has_layer_weights_tells_stage1_from_stage2_files(model, tmp_path):
    from object_detector_retinanet.keras_retinanet.models.weights import has_layer_weights

    stage1 = tmp_path / "resnet50_csv_01.weights.h5"
    model.save_weights(stage1)
    stage2 = tmp_path / "iou_resnet50_csv_01.weights.h5"
    add_iou_head(model, num_classes=1).save_weights(stage2)
    assert not has_layer_weights(stage1, "iou") and has_layer_weights(stage2, "iou")
