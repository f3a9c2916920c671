"""The Soft-IoU head and the stage-2 training model (§5.4, §5.6)."""

import keras
import numpy as np
import pytest

from object_detector_retinanet.keras_retinanet import config, losses
from object_detector_retinanet.keras_retinanet.models.retinanet import build_retinanet
from object_detector_retinanet.keras_retinanet.models.soft_iou import (
    add_iou_head,
    iter_layers,
    retinanet_iou,
)
from object_detector_retinanet.keras_retinanet.preprocessing.csv_generator import CSVGenerator
from object_detector_retinanet.keras_retinanet.utils.anchors import (
    anchors_for_shape,
    bbox_transform_inv,
    stage2_targets,
)


@pytest.fixture(scope="module")
def stage2():
    keras.utils.set_random_seed(0)
    base = build_retinanet(num_classes=1, freeze_bn=True)
    model = add_iou_head(base, num_classes=1)
    return base, model, retinanet_iou(model)


def test_iou_head_names_and_initial_output(stage2):
    _, model, _ = stage2
    assert model.output_names == [config.REGRESSION, config.CLASSIFICATION, config.IOU]
    head = model.get_layer("iou_submodel")
    assert [layer.name for layer in head.layers[1:]] == [
        "pyramid_iou_0",
        "pyramid_iou_1",
        "pyramid_iou_2",
        "pyramid_iou_3",
        "pyramid_iou",
        "pyramid_iou_reshape",
        "pyramid_iou_sigmoid",
    ]
    kernel, bias = head.get_layer("pyramid_iou").get_weights()
    assert np.all(bias == 0) and 0.005 < kernel.std() < 0.015  # N(0, 0.01), zero bias
    iou = model.predict_on_batch(np.random.rand(1, 64, 64, 3).astype("float32"))[2]
    # sigmoid of a small N(0, 0.01)-weighted sum: close to 0.5 everywhere at initialisation
    assert abs(float(iou.mean()) - 0.5) < 0.05 and 0.2 < iou.min() and iou.max() < 0.8


def test_add_iou_head_shares_the_stage1_layers(stage2):
    base, model, _ = stage2
    assert model.get_layer("P3") is base.get_layer("P3")
    assert model.get_layer("regression_submodel") is base.get_layer("regression_submodel")
    assert add_iou_head(model, 1) is model  # idempotent


def test_only_iou_layers_are_trainable(stage2):
    _, model, training = stage2
    trainable = {v.path.split("/")[0] for v in training.trainable_variables}
    assert trainable == {
        "pyramid_iou_0",
        "pyramid_iou_1",
        "pyramid_iou_2",
        "pyramid_iou_3",
        "pyramid_iou",
    }
    for layer in iter_layers(model):
        if config.IOU_SUBSTRING not in layer.name and layer.weights:
            assert not layer.trainable, layer.name


def test_output_order_is_boxes_iou_classification(stage2):
    _, model, training = stage2
    image = np.random.rand(1, 96, 64, 3).astype("float32")
    regression, classification, iou = model.predict_on_batch(image)
    packed = training.predict_on_batch(image)
    assert packed.shape == (1, regression.shape[1], 6)
    boxes = bbox_transform_inv(anchors_for_shape((96, 64)), regression[0])
    np.testing.assert_allclose(packed[0, :, :4], boxes, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(packed[0, :, 4:5], iou[0], rtol=1e-6)
    np.testing.assert_allclose(packed[0, :, 5:6], classification[0], rtol=1e-6)


def test_stage2_steps_change_only_the_iou_head(tiny_dataset):
    keras.utils.set_random_seed(0)
    base = build_retinanet(num_classes=1, freeze_bn=False)  # BN with moving stats in the base
    model = add_iou_head(base, num_classes=1)
    training = retinanet_iou(model)
    # Make the hard scores pass the 0.1 gate so the loss has anchors to learn from.
    cls = model.get_layer("classification_submodel").get_layer("pyramid_classification")
    cls.set_weights([cls.get_weights()[0], np.full_like(cls.get_weights()[1], 2.0)])
    before = {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.weights}
    training.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses.soft_iou())
    gen = CSVGenerator(
        str(tiny_dataset / "annotations" / "annotations_train.csv"),
        base_dir=str(tiny_dataset / "images"),
        targets_fn=stage2_targets,
        image_min_side=128,
        image_max_side=128,
    )
    for i in range(3):
        inputs, targets = gen[i % len(gen)]
        training.train_on_batch(inputs, targets[config.IOU_REGRESSION_OUTPUT])
    changed = {
        p
        for p, v in before.items()
        if not np.array_equal(
            keras.ops.convert_to_numpy(next(w for w in model.weights if w.path == p)), v
        )
    }
    assert changed, "the IoU head did not learn"
    assert all("iou" in p for p in changed), sorted(p for p in changed if "iou" not in p)
