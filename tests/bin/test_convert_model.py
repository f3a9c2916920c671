"""convert_model and serving: the .keras file and the SavedModel give the Keras model's outputs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from object_detector_retinanet.keras_retinanet import config, serving
from object_detector_retinanet.keras_retinanet.bin import convert_model
from object_detector_retinanet.keras_retinanet.errors import INPUT_ERROR_STATUS
from object_detector_retinanet.keras_retinanet.models.retinanet import (
    _normal,
    apply_submodel,
    build_head,
    create_pyramid_features,
    retinanet_bbox,
)
from object_detector_retinanet.keras_retinanet.models.soft_iou import add_iou_head

WIDTH = 16  # pyramid and head width of the tiny detector (256 in the real one)


def _tiny_detector(x, soft_iou=True, kept=29, max_detections=40):
    """The inference graph of the real detector on a three-conv backbone, 16 features wide.

    Every custom layer is there (UpsampleLike, Anchors, RegressBoxes, ClipBoxes,
    FilterDetections), plus keras-resnet's BatchNormalization. The final classification kernel is
    random, so the scores differ from anchor to anchor, and the score threshold lets ``kept`` of
    them through on ``x``: the outputs hold detections and -1 padding.
    """
    import keras_resnet.layers

    from object_detector_retinanet.keras_retinanet.models.backbone import patch_keras_resnet

    patch_keras_resnet()
    keras.utils.set_random_seed(3)
    image = keras.Input((None, None, 3), name="input_1")
    c3 = keras.layers.Conv2D(8, 3, strides=8, padding="same", name="c3")(image)
    c3 = keras_resnet.layers.BatchNormalization(freeze=True, name="bn_c3")(c3)
    c4 = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="c4")(c3)
    c5 = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="c5")(c4)
    features = create_pyramid_features(c3, c4, c5, feature_size=WIDTH)
    anchors = config.AnchorConfig().num_anchors
    size = {"pyramid_feature_size": WIDTH, "feature_size": WIDTH}
    heads = [
        (config.REGRESSION, build_head("pyramid_regression", 4, anchors, _normal(), **size)),
        (
            config.CLASSIFICATION,
            build_head(
                "pyramid_classification",
                1,
                anchors,
                keras.initializers.RandomNormal(stddev=0.5),
                "zeros",
                activation="sigmoid",
                **size,
            ),
        ),
    ]
    if soft_iou:
        heads.append(
            (
                config.IOU,
                build_head("pyramid_iou", 1, anchors, _normal(), activation="sigmoid", **size),
            )
        )
    outputs = [apply_submodel(name, head, features) for name, head in heads]
    model = keras.Model(image, outputs)
    scores = np.sort(model.predict_on_batch(x)[1].ravel())[::-1]
    threshold = float(scores[kept - 1] + scores[kept]) / 2
    return retinanet_bbox(model, score_threshold=threshold, max_detections=max_detections)


def _image(seed=0, height=96, width=128):
    return np.random.default_rng(seed).normal(0, 50, (1, height, width, 3)).astype("float32")


@pytest.mark.parametrize("soft_iou", [True, False])
def test_saved_model_and_keras_file_give_the_keras_outputs(tmp_path, soft_iou):
    x = _image()
    model = _tiny_detector(x, soft_iou)
    expected = model.predict_on_batch(x)
    assert len(expected) == (4 if soft_iou else 3)
    assert (expected[1][0] > 0).sum() == 29  # detections and padding: both paths compared
    if not soft_iou:
        expected = [*expected, expected[1][..., None]]

    serving.export_saved_model(model, tmp_path / "saved")
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    signature = loaded.signatures["serving_default"]
    assert set(signature.structured_input_signature[1]) == {serving.INPUT_NAME}
    outputs = signature(image=tf.constant(x))
    assert set(outputs) == set(serving.OUTPUT_NAMES)
    shapes = {"boxes": (1, 40, 4), "hard_scores": (1, 40), "labels": (1, 40)}
    shapes["soft_scores"] = (1, 40, 1)
    for name, want in zip(serving.OUTPUT_NAMES, expected):
        got = outputs[name].numpy()
        assert got.shape == shapes[name], name
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4, err_msg=name)
    assert outputs["labels"].dtype == tf.int32
    # Another image size through the same SavedModel (H and W are dynamic).
    other = loaded.serve(tf.constant(_image(1, 64, 80)))
    np.testing.assert_allclose(
        other["hard_scores"].numpy(), model.predict_on_batch(_image(1, 64, 80))[1], rtol=1e-5
    )

    serving.save_keras_model(model, tmp_path / "model.keras")
    keras.backend.clear_session()  # the load must not lean on the objects built above
    reloaded = serving.load_keras_model(tmp_path / "model.keras")
    for got, want in zip(reloaded.predict_on_batch(x), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_save_keras_model_wants_the_keras_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"\.keras"):
        serving.save_keras_model(None, tmp_path / "model.h5")


def test_missing_model_exits_2_with_one_line(tmp_path, capsys):
    missing = tmp_path / "gone.weights.h5"
    with pytest.raises(SystemExit) as exit_info:
        convert_model.main([str(missing), str(tmp_path / "out.keras")])
    assert exit_info.value.code == INPUT_ERROR_STATUS
    err = capsys.readouterr().err
    assert err.strip() == f"error: {missing}: no such weights file"


def test_unreadable_weights_file_exits_2(tmp_path, capsys):
    broken = tmp_path / "broken.weights.h5"
    broken.write_bytes(b"not hdf5")
    with pytest.raises(SystemExit) as exit_info:
        convert_model.main([str(broken), str(tmp_path / "out.keras")])
    assert exit_info.value.code == INPUT_ERROR_STATUS
    assert capsys.readouterr().err.startswith(f"error: {broken}: not a readable weights file")


def test_out_must_be_a_keras_file(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        convert_model.parse_args([str(tmp_path / "w.h5"), str(tmp_path / "out.h5")])
    assert exit_info.value.code == 2
    assert "OUT must end in .keras" in capsys.readouterr().err


@pytest.mark.slow
def test_resnet50_weights_convert_end_to_end(tmp_path):
    """A random-weight stage-2 ResNet50 snapshot through the command line, both files."""
    from object_detector_retinanet.keras_retinanet.inference import load_inference_model
    from object_detector_retinanet.keras_retinanet.models.retinanet import build_retinanet

    keras.utils.set_random_seed(0)
    model = add_iou_head(build_retinanet(num_classes=1), num_classes=1)
    kernel = model.get_layer("classification_submodel").get_layer("pyramid_classification").kernel
    kernel.assign(np.random.default_rng(0).normal(0, 2e-4, kernel.shape).astype("float32"))
    weights = tmp_path / "iou_resnet50_csv_01.weights.h5"
    model.save_weights(weights)
    out, saved = convert_model.main(
        [str(weights), str(tmp_path / "m.keras"), "--saved-model", str(tmp_path / "sm")]
        + ["--score-threshold", "0.0", "--max-detections", "300"]
    )
    x = _image(2, 160, 224)
    reference, _ = load_inference_model(str(weights), "resnet50", 1, 0.0)
    want = reference.predict_on_batch(x)
    assert want[1].shape[1] > 300  # the reference pads to every anchor; the files keep K = 300
    outputs = tf.saved_model.load(saved).signatures["serving_default"](image=tf.constant(x))
    for name, expected in zip(serving.OUTPUT_NAMES, want):
        np.testing.assert_allclose(
            outputs[name].numpy(), expected[:, :300], rtol=1e-4, atol=1e-3, err_msg=name
        )
    for got, expected in zip(serving.load_keras_model(out).predict_on_batch(x), want):
        np.testing.assert_allclose(got, expected[:, :300], rtol=1e-4, atol=1e-3)
