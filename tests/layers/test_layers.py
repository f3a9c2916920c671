"""Custom layers and the initialiser (§5.2–§5.7; B16, B17, B26): values, shapes, configs,
`.keras` save/load and XLA training."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from object_detector_retinanet.keras_retinanet import losses
from object_detector_retinanet.keras_retinanet.config import AnchorConfig
from object_detector_retinanet.keras_retinanet.initializers import PriorProbability
from object_detector_retinanet.keras_retinanet.layers import (
    Anchors,
    ClipBoxes,
    FilterDetections,
    RegressBoxes,
    UpsampleLike,
)
from object_detector_retinanet.keras_retinanet.utils.anchors import (
    anchors_for_shape,
    bbox_transform_inv,
    guess_shapes,
)


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _config_round_trip(obj):
    restored = type(obj).from_config(obj.get_config())
    assert restored.get_config() == obj.get_config()
    return restored


# --- PriorProbability (§5.4) ---


def test_prior_probability_value():
    init = PriorProbability(0.01)
    values = _np(init((3,)))
    # -log((1 - 0.01) / 0.01) = -log(99) ≈ -4.595, so sigmoid(bias) = 0.01
    np.testing.assert_allclose(values, [-math.log(99)] * 3, rtol=1e-6)
    assert _np(keras.ops.sigmoid(values))[0] == pytest.approx(0.01, rel=1e-5)
    restored = _config_round_trip(init)
    assert restored.probability == 0.01
    with pytest.raises(ValueError, match="probability"):
        PriorProbability(1.0)


# --- Anchors (§5.3) ---


def test_anchors_hand_values_on_a_2x2_map():
    # size 32, ratio 1, scale 1 -> base [-16, -16, 16, 16]; stride 8 -> centres 4 and 12.
    layer = Anchors(size=32, stride=8, ratios=[1.0], scales=[1.0])
    out = _np(layer(np.zeros((2, 2, 2, 5), "float32")))
    expected = [
        [-12, -12, 20, 20],  # (iy 0, ix 0): centre (4, 4)
        [-4, -12, 28, 20],  # (0, 1): centre (12, 4)
        [-12, -4, 20, 28],  # (1, 0): centre (4, 12)
        [-4, -4, 28, 28],  # (1, 1)
    ]
    assert out.shape == (2, 4, 4)
    np.testing.assert_allclose(out[0], expected)
    np.testing.assert_allclose(out[1], expected)


@pytest.mark.parametrize("image_shape", [(64, 64, 3), (100, 70, 3)])
def test_anchors_layer_equals_anchors_for_shape(image_shape):
    config = AnchorConfig()
    expected = anchors_for_shape(image_shape)
    per_level = []
    for level, (h, w) in enumerate(guess_shapes(image_shape[:2])):
        layer = Anchors(size=config.sizes[level], stride=config.strides[level])
        per_level.append(_np(layer(np.zeros((1, h, w, 2), "float32")))[0])
    np.testing.assert_allclose(np.concatenate(per_level), expected, rtol=1e-6, atol=1e-4)
    if image_shape == (64, 64, 3):
        assert expected.shape == ((64 + 16 + 4 + 1 + 1) * 9, 4)  # 774 anchors (§5.3)


def test_b26_anchors_default_ratios_and_scales():
    # The original crashed in __init__ on ratios=None / scales=None.
    layer = Anchors(size=32, stride=8)
    config = AnchorConfig()
    assert layer.ratios == list(config.ratios)
    assert layer.scales == list(config.scales)
    assert _np(layer(np.zeros((1, 3, 2, 1), "float32"))).shape == (1, 3 * 2 * 9, 4)


def test_anchors_dynamic_shapes_and_config():
    inputs = keras.Input((None, None, 8))
    assert Anchors(size=64, stride=16)(inputs).shape == (None, None, 4)
    assert Anchors(size=64, stride=16)(keras.Input((5, 7, 8))).shape == (None, 5 * 7 * 9, 4)
    restored = _config_round_trip(Anchors(size=64, stride=16, ratios=[1.0], name="anchors_1"))
    assert (restored.size, restored.stride, restored.num_anchors) == (64, 16, 3)

    @tf.function(input_signature=[tf.TensorSpec((None, None, None, 8))])
    def run(features):
        return Anchors(size=64, stride=16)(features)

    assert run(tf.zeros((2, 3, 4, 8))).shape == (2, 3 * 4 * 9, 4)


# --- RegressBoxes / ClipBoxes (§5.7) ---


def test_regress_boxes_hand_value():
    # anchor [0, 0, 10, 10] (w = h = 10), deltas [0.5, 1, 0.5, 1] * std 0.2 * 10 = [1, 2, 1, 2]
    anchors = np.array([[[0, 0, 10, 10]]], "float32")
    deltas = np.array([[[0.5, 1.0, 0.5, 1.0]]], "float32")
    out = _np(RegressBoxes()([anchors, deltas]))
    np.testing.assert_allclose(out, [[[1, 2, 11, 12]]], rtol=1e-6)


def test_regress_boxes_equals_numpy_inverse():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 200, size=(2, 50, 2))
    wh = rng.uniform(4, 80, size=(2, 50, 2))
    anchors = np.concatenate([xy, xy + wh], -1).astype("float32")
    deltas = rng.normal(size=(2, 50, 4)).astype("float32")
    layer = RegressBoxes(mean=0.0, std=0.2)
    expected = bbox_transform_inv(anchors, deltas, mean=0.0, std=0.2)  # broadcasts over (B, N)
    np.testing.assert_allclose(_np(layer([anchors, deltas])), expected, rtol=1e-5, atol=1e-3)
    assert _config_round_trip(RegressBoxes(mean=0.0, std=[0.1, 0.1, 0.2, 0.2])).std == [
        0.1,
        0.1,
        0.2,
        0.2,
    ]


def test_clip_boxes_to_input_width_and_height_not_minus_one():
    image = np.zeros((1, 20, 30, 3), "float32")  # H = 20, W = 30
    boxes = np.array([[[-5, -3, 35, 25], [1, 2, 3, 4]]], "float32")
    out = _np(ClipBoxes()([image, boxes]))
    # QUIRK (KEEP): clipped to W = 30 and H = 20, not 29 / 19
    np.testing.assert_allclose(out, [[[0, 0, 30, 20], [1, 2, 3, 4]]])
    symbolic = ClipBoxes()([keras.Input((None, None, 3)), keras.Input((None, 4))])
    assert symbolic.shape == (None, None, 4)


# --- UpsampleLike (§5.2) ---


def _tf1_nearest_reference(source, out_h, out_w):
    """TF1 resize_nearest_neighbor, align_corners=False, half_pixel_centers=False."""
    in_h, in_w = source.shape[1:3]
    rows = np.array([i * in_h // out_h for i in range(out_h)])  # floor(i * in / out)
    cols = np.array([j * in_w // out_w for j in range(out_w)])
    return source[:, rows][:, :, cols]


@pytest.mark.parametrize(
    ("source_hw", "target_hw"),
    [((84, 7), (167, 13)), ((25, 25), (50, 50)), ((7, 84), (13, 167)), ((5, 3), (12, 7))],
)
def test_upsample_like_matches_tf1_nearest(source_hw, target_hw):
    rng = np.random.default_rng(0)
    source = rng.normal(size=(2, *source_hw, 3)).astype("float32")
    target = np.zeros((2, *target_hw, 1), "float32")
    out = _np(UpsampleLike()([source, target]))
    assert out.shape == (2, *target_hw, 3)
    np.testing.assert_array_equal(out, _tf1_nearest_reference(source, *target_hw))


def test_upsample_like_differs_from_tf2_half_pixel_resize_on_odd_sizes():
    # The reference above is not what tf.image.resize(method="nearest") does (half-pixel centres).
    source = np.arange(7 * 7, dtype="float32").reshape(1, 7, 7, 1)
    tf2 = tf.image.resize(source, (13, 13), method="nearest").numpy()
    assert not np.array_equal(tf2, _tf1_nearest_reference(source, 13, 13))


def test_upsample_like_symbolic_shape():
    out = UpsampleLike()([keras.Input((None, None, 4)), keras.Input((None, None, 9))])
    assert out.shape == (None, None, None, 4)
    assert UpsampleLike()([keras.Input((3, 4, 4)), keras.Input((6, 7, 9))]).shape == (None, 6, 7, 4)


# --- FilterDetections (§5.7 step 4; B16, B17) ---


def _detections_inputs():
    scores = np.array([0.05, 0.1, 0.11, 0.9, 0.5, 0.07], "float32")
    boxes = np.arange(6 * 4, dtype="float32").reshape(6, 4)  # box i = [4i, 4i+1, 4i+2, 4i+3]
    soft = np.linspace(0.0, 0.5, 6, dtype="float32")  # per-anchor soft-IoU
    return boxes[None], scores[None, :, None], soft[None, :, None]


def test_filter_detections_keeps_every_score_above_threshold_best_first_and_pads():
    boxes, scores, soft = _detections_inputs()
    out_boxes, out_scores, out_labels, out_soft = (
        _np(x) for x in FilterDetections()([boxes, scores, soft])
    )
    # > 0.1 strictly: anchors 3 (0.9), 4 (0.5), 2 (0.11); 0.1 itself is dropped.
    order = [3, 4, 2]
    np.testing.assert_allclose(out_scores[0, :3], [0.9, 0.5, 0.11])
    np.testing.assert_array_equal(out_boxes[0, :3], boxes[0, order])
    np.testing.assert_array_equal(out_labels[0, :3], [0, 0, 0])
    np.testing.assert_allclose(out_soft[0, :3], soft[0, order])  # gathered per anchor
    assert out_labels.dtype == np.int32
    # the rest is -1 padding
    assert np.all(out_scores[0, 3:] == -1) and np.all(out_labels[0, 3:] == -1)
    assert np.all(out_boxes[0, 3:] == -1) and np.all(out_soft[0, 3:] == -1)


def test_b16_filter_detections_pads_to_the_anchor_count_not_999999():
    # The original padded every image to 999,999 rows; K is now N (6 anchors, one class).
    boxes, scores, soft = _detections_inputs()
    outputs = FilterDetections()([boxes, scores, soft])
    assert [tuple(o.shape) for o in outputs] == [(1, 6, 4), (1, 6), (1, 6), (1, 6, 1)]
    symbolic = FilterDetections()([keras.Input((None, 4)), keras.Input((None, 1))])
    assert [tuple(o.shape) for o in symbolic] == [(None, None, 4), (None, None), (None, None)]


def test_filter_detections_respects_max_detections():
    boxes, scores, soft = _detections_inputs()
    out = FilterDetections(max_detections=2)([boxes, scores, soft])
    assert [tuple(o.shape) for o in out] == [(1, 2, 4), (1, 2), (1, 2), (1, 2, 1)]
    np.testing.assert_allclose(_np(out[1])[0], [0.9, 0.5])
    # more room than anchors: pad past N
    out = FilterDetections(max_detections=8)([boxes, scores])
    np.testing.assert_allclose(_np(out[1])[0], [0.9, 0.5, 0.11, -1, -1, -1, -1, -1])


def test_b17_filter_detections_uses_its_score_threshold():
    # The original graph always used 0.1; 0.05 must now keep 0.07 and 0.1 as well (not 0.05 itself).
    boxes, scores, _ = _detections_inputs()
    out_scores = _np(FilterDetections(score_threshold=0.05)([boxes, scores])[1])[0]
    np.testing.assert_allclose(out_scores, [0.9, 0.5, 0.11, 0.1, 0.07, -1])
    out_scores = _np(FilterDetections(score_threshold=0.6)([boxes, scores])[1])[0]
    np.testing.assert_allclose(out_scores, [0.9, -1, -1, -1, -1, -1])


def test_filter_detections_batch_and_classes():
    # Image 0: anchor 0 scores [0.5 (class 0), 0.5 (class 1)], anchor 1 [0.2, 0.0]
    # Image 1: nothing above 0.1.
    classification = np.array([[[0.5, 0.5], [0.2, 0.0]], [[0.1, 0.0], [0.0, 0.05]]], "float32")
    boxes = np.array([[[0, 0, 1, 1], [2, 2, 3, 3]], [[4, 4, 5, 5], [6, 6, 7, 7]]], "float32")
    outputs = FilterDetections()([boxes, classification])
    out_boxes, out_scores, out_labels = (_np(x) for x in outputs)
    assert out_scores.shape == (2, 4)  # K = N * C = 4
    # tie 0.5/0.5 resolves class 0 first, as the original's per-class concatenation + top_k
    np.testing.assert_allclose(out_scores[0], [0.5, 0.5, 0.2, -1])
    np.testing.assert_array_equal(out_labels[0], [0, 1, 0, -1])
    np.testing.assert_array_equal(out_boxes[0, :3], boxes[0, [0, 0, 1]])
    assert np.all(out_scores[1] == -1) and np.all(out_labels[1] == -1)


def test_filter_detections_optional_nms_per_class():
    boxes = np.array(
        [[[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [50, 50, 60, 60]]], "float32"
    )
    # anchors 0 and 1 overlap (IoU 90 / 110 ≈ 0.82 > 0.5) in class 0: 1 is suppressed.
    # anchor 2 is the same box as anchor 0 but scores in class 1 only: NMS is per class, kept.
    classification = np.array([[[0.9, 0.0], [0.8, 0.0], [0.0, 0.7], [0.6, 0.0]]], "float32")
    out_boxes, out_scores, out_labels = (
        _np(x) for x in FilterDetections(nms=True)([boxes, classification])
    )
    np.testing.assert_allclose(out_scores[0, :4], [0.9, 0.7, 0.6, -1])
    np.testing.assert_array_equal(out_labels[0, :3], [0, 1, 0])
    np.testing.assert_array_equal(out_boxes[0, :3], boxes[0, [0, 2, 3]])
    # without NMS all four survive
    assert np.sum(_np(FilterDetections()([boxes, classification])[1]) > 0) == 4


def test_filter_detections_config_round_trip():
    layer = FilterDetections(
        nms=True, score_threshold=0.2, nms_threshold=0.4, max_detections=7, parallel_iterations=4
    )
    restored = _config_round_trip(layer)
    assert (restored.nms, restored.score_threshold, restored.max_detections) == (True, 0.2, 7)


# --- Save / load of a tiny model containing every layer and the initialiser ---


def _tiny_inference_model():
    image = keras.Input((None, None, 3))
    c1 = keras.layers.Conv2D(4, 3, strides=2, padding="same")(image)
    c2 = keras.layers.Conv2D(4, 3, strides=2, padding="same")(c1)
    merged = keras.layers.Add()([UpsampleLike(name="up")([c2, c1]), c1])
    anchors = Anchors(size=8, stride=2, ratios=[1.0], scales=[1.0], name="anchors_0")(merged)
    regression = keras.layers.Conv2D(4, 3, padding="same")(merged)
    regression = keras.layers.Reshape((-1, 4))(regression)
    classification = keras.layers.Conv2D(
        1, 3, padding="same", kernel_initializer="zeros", bias_initializer=PriorProbability(0.3)
    )(merged)
    classification = keras.layers.Reshape((-1, 1))(classification)
    classification = keras.layers.Activation("sigmoid")(classification)
    boxes = RegressBoxes(name="boxes")([anchors, regression])
    boxes = ClipBoxes(name="clipped_boxes")([image, boxes])
    detections = FilterDetections(score_threshold=0.25, name="filtered_detections")(
        [boxes, classification]
    )
    return keras.Model(image, detections)


def test_tiny_model_with_every_layer_saves_and_loads(tmp_path):
    model = _tiny_inference_model()
    x = np.random.default_rng(0).normal(size=(1, 13, 10, 3)).astype("float32")
    before = model.predict_on_batch(x)
    # PriorProbability(0.3) bias with a zero kernel: every anchor scores 0.3 > 0.25, all kept.
    # 13 x 10 -> stride 2: 7 x 5 = 35 anchors.
    np.testing.assert_allclose(before[1], np.full((1, 35), 0.3), rtol=1e-5)
    path = tmp_path / "tiny.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    after = loaded.predict_on_batch(x)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    assert loaded.get_layer("filtered_detections").score_threshold == 0.25


# --- XLA training (§5.2: the upsampling must compile) ---


def test_training_path_layers_train_under_xla_on_cpu():
    # Keras' jit_compile="auto" turns XLA on whenever a GPU is visible; tf.image.resize-based
    # upsampling then fails with
    # "No registered 'ResizeNearestNeighborGrad' OpKernel for XLA_CPU_JIT".
    image = keras.Input((None, None, 3))
    c1 = keras.layers.Conv2D(4, 3, strides=2, padding="same")(image)
    c2 = keras.layers.Conv2D(4, 3, strides=2, padding="same")(c1)
    features = keras.layers.Add()([UpsampleLike()([c2, c1]), c1])
    anchors = Anchors(size=8, stride=2, ratios=[1.0], scales=[1.0])(features)
    regression = keras.layers.Reshape((-1, 4), name="regression")(
        keras.layers.Conv2D(4, 3, padding="same")(features)
    )
    classification = keras.layers.Reshape((-1, 1), name="classification")(
        keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(features)
    )
    boxes = RegressBoxes()([anchors, regression])
    soft = keras.layers.Reshape((-1, 1))(
        keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(features)
    )
    packed = keras.layers.Concatenate(name="packed")([boxes, soft, classification])
    model = keras.Model(image, [regression, classification, packed])
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss={
            "regression": losses.smooth_l1(),
            "classification": losses.focal(),
            "packed": losses.soft_iou(hard_score_gate=0.0),
        },
        jit_compile=True,
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 15, 9, 3)).astype("float32")
    n = 8 * 5  # 15 x 9 -> stride 2: 8 x 5 cells, one anchor each
    states = rng.choice([-1.0, 0.0, 1.0], size=(2, n, 1)).astype("float32")
    gt = np.tile(np.array([0, 0, 8, 8], "float32"), (2, n, 1))
    y = {
        "regression": np.concatenate([rng.normal(size=(2, n, 4)), states], -1).astype("float32"),
        "classification": states,
        "packed": np.concatenate([gt, states], -1),
    }
    kernel = model.layers[1].kernel
    before = _np(kernel).copy()
    logs = model.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"])
    assert not np.array_equal(before, _np(kernel))  # gradients flowed through UpsampleLike


def test_box_layers_stay_float32_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        features = keras.Input((None, None, 2))
        deltas = keras.layers.Reshape((-1, 4))(keras.layers.Conv2D(4, 1)(features))  # float16
        anchors = Anchors(size=33, stride=8, ratios=[1.0], scales=[1.0])(features)
        boxes = RegressBoxes()([anchors, deltas])
        clipped = ClipBoxes()([keras.Input((None, None, 3)), boxes])
        upsampled = UpsampleLike()([features, features])
        assert deltas.dtype == "float16"
        assert anchors.dtype == boxes.dtype == clipped.dtype == "float32"
        assert upsampled.dtype == "float16"  # features follow the global policy
        model = keras.Model(features, boxes)
        out = _np(model(np.zeros((1, 130, 130, 2), "float32")))  # zero input -> zero deltas
        assert out.dtype == np.float32
        # last cell (iy = ix = 129): centre 129.5 * 8 = 1036, half side 16.5 ->
        # [1019.5, 1019.5, 1052.5, 1052.5]; float16 (spacing 1 above 1024) would give 1052.
        np.testing.assert_array_equal(out[0, -1], [1019.5, 1019.5, 1052.5, 1052.5])
    finally:
        keras.config.set_dtype_policy("float32")
