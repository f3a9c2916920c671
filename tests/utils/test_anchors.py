"""Tests for utils/anchors.py: anchors (§5.3), box coding and targets (§6)."""

import numpy as np
import pytest

from object_detector_retinanet.keras_retinanet import config
from object_detector_retinanet.keras_retinanet.utils import anchors as anchors_mod
from object_detector_retinanet.keras_retinanet.utils.anchors import (
    anchor_targets_bbox,
    anchors_for_shape,
    bbox_transform,
    bbox_transform_inv,
    generate_anchors,
    guess_shapes,
    iou_targets,
    shift,
    stage1_targets,
    stage2_targets,
)
from object_detector_retinanet.keras_retinanet.utils.boxes import compute_overlap


def _image(height, width):
    return np.zeros((height, width, 3), dtype=np.uint8)


def _ann(boxes, labels=None):
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.zeros(len(boxes), np.int64) if labels is None else np.asarray(labels, np.int64)
    return {"bboxes": boxes, "labels": labels}


# --- generation ---------------------------------------------------------------------------


def test_shift_size32_stride8_ratio1_scale1_on_2x2_map():
    base = generate_anchors(32, ratios=[1.0], scales=[1.0])
    np.testing.assert_array_equal(base, [[-16, -16, 16, 16]])
    # centres at (0 + 0.5) * 8 = 4 and (1 + 0.5) * 8 = 12; -12 == 4 - 16, 28 == 12 + 16
    expected = [
        [-12, -12, 20, 20],  # (y=0, x=0)
        [-4, -12, 28, 20],  # (y=0, x=1): x moves fastest
        [-12, -4, 20, 28],  # (y=1, x=0)
        [-4, -4, 28, 28],  # (y=1, x=1)
    ]
    np.testing.assert_array_equal(shift((2, 2), 8, base), expected)


def test_ratio_half_on_base_32():
    # area 32**2 = 1024, r = h / w = 0.5: w = sqrt(1024 / 0.5) = 45.25, h = 0.5 * w = 22.63
    (anchor,) = generate_anchors(32, ratios=[0.5], scales=[1.0])
    assert anchor[2] - anchor[0] == pytest.approx(45.2548, abs=1e-4)
    assert anchor[3] - anchor[1] == pytest.approx(22.6274, abs=1e-4)
    assert anchor[0] == -anchor[2] and anchor[1] == -anchor[3]  # centred on (0, 0)


def test_default_generate_anchors_order_ratio_outer_scale_inner():
    anchors = generate_anchors(32)  # None ratios/scales -> AnchorConfig defaults (B26)
    assert anchors.shape == (9, 4)
    w = anchors[:, 2] - anchors[:, 0]
    h = anchors[:, 3] - anchors[:, 1]
    ratios = np.repeat([0.5, 1.0, 2.0], 3)
    scales = np.tile([1.0, 2 ** (1 / 3), 2 ** (2 / 3)], 3)
    np.testing.assert_allclose(h / w, ratios)
    np.testing.assert_allclose(w * h, (32 * scales) ** 2)


def test_guess_shapes_800x1066():
    # ceil(800 / 8) = 100, ceil(1066 / 8) = 134, ..., ceil(800 / 128) = 7, ceil(1066 / 128) = 9
    assert guess_shapes((800, 1066, 3)) == [(100, 134), (50, 67), (25, 34), (13, 17), (7, 9)]


def test_anchor_counts():
    assert anchors_for_shape((64, 64)).shape == ((64 + 16 + 4 + 1 + 1) * 9, 4) == (774, 4)
    # (13400 + 3350 + 850 + 221 + 63) * 9 = 160,956
    assert anchors_for_shape((800, 1066, 3)).shape == (160956, 4)


def test_anchors_for_shape_levels_and_fresh_copy():
    anchors = anchors_for_shape((64, 64))
    # first 64 * 9 anchors are P3's shift of its base anchors; the last 9 are P7's single cell
    np.testing.assert_array_equal(anchors[: 64 * 9], shift((8, 8), 8, generate_anchors(32)))
    np.testing.assert_array_equal(anchors[-9:], shift((1, 1), 128, generate_anchors(512)))
    anchors[0] = 0  # callers get their own writable array; the cache is not touched
    assert anchors_for_shape((64, 64))[0, 0] != 0


# --- box coding ---------------------------------------------------------------------------


def test_bbox_transform_hand_case():
    # (1 - 0) / 10 / 0.2 = 0.5, (2 - 0) / 10 / 0.2 = 1,
    # (11 - 10) / 10 / 0.2 = 0.5, (12 - 10) / 10 / 0.2 = 1
    got = bbox_transform(np.array([[0, 0, 10, 10]]), np.array([[1, 2, 11, 12]]))
    np.testing.assert_allclose(got, [[0.5, 1.0, 0.5, 1.0]], atol=1e-12)


def test_bbox_transform_inv_hand_case_and_round_trip():
    # 0 + 0.5 * 0.2 * 10 = 1, ..., 10 + 1 * 0.2 * 10 = 12
    np.testing.assert_allclose(
        bbox_transform_inv(np.array([[0, 0, 10, 10]]), np.array([[0.5, 1, 0.5, 1]])),
        [[1, 2, 11, 12]],
        atol=1e-12,
    )
    rng = np.random.default_rng(0)
    anchors = anchors_for_shape((64, 96))
    gt = anchors + rng.normal(0, 5, anchors.shape)
    decoded = bbox_transform_inv(anchors, bbox_transform(anchors, gt))
    np.testing.assert_allclose(decoded, gt, atol=1e-9)


# --- assignment ---------------------------------------------------------------------------

# One GT box [0,0,10,10] (area 100) against hand-built anchors; IoU = 100 / union.
_GT = [[0, 0, 10, 10]]
_HAND_ANCHORS = np.array(
    [
        [0, 0, 10, 10],  # IoU 100 / 100 = 1      -> positive
        [0, 0, 20, 10],  # IoU 100 / 200 = 0.5    -> positive (>= 0.5)
        [0, 0, 10, 24],  # IoU 100 / 240 = 0.417  -> ignore
        [0, 0, 10, 25],  # IoU 100 / 250 = 0.4    -> ignore (>= 0.4)
        [0, 0, 10, 26],  # IoU 100 / 260 = 0.385  -> background
        [0, 0, 20, 10.5],  # IoU 100 / 210 = 0.476 -> ignore
        [100, 100, 110, 110],  # IoU 0            -> background
    ],
    dtype=np.float64,
)


def test_one_gt_box_states_at_thresholds():
    regression, labels = anchor_targets_bbox(_HAND_ANCHORS, [_image(200, 200)], [_ann(_GT)], 1)
    expected = [1, 1, -1, -1, 0, -1, 0]
    np.testing.assert_array_equal(regression[0, :, 4], expected)
    np.testing.assert_array_equal(labels[0, :, 0], expected)
    assert regression.dtype == np.float32 and labels.dtype == np.float32
    # positive 2: anchor [0,0,20,10] -> gt [0,0,10,10]: dx2 = (10 - 20) / 20 / 0.2 = -2.5
    np.testing.assert_allclose(regression[0, 1, :4], [0, 0, -2.5, 0])
    # background anchors have no matched box: zeros
    np.testing.assert_array_equal(regression[0, [4, 6], :4], 0)


def test_centre_outside_real_image_is_ignored():
    # anchor centre x = (90 + 110) / 2 = 100: outside a 100-wide image (>= W) even with IoU 1;
    # centre x = 99.5 is inside; the batch is padded to 200 wide by the other image
    anchors = np.array([[90, 0, 110, 10], [89, 0, 110, 10], [0, 95, 10, 105]], dtype=float)
    gts = _ann([[90, 0, 110, 10], [89, 0, 110, 10], [0, 95, 10, 105]])
    images = [_image(100, 100), _image(200, 200)]
    regression, labels = anchor_targets_bbox(anchors, images, [gts, gts], 1)
    np.testing.assert_array_equal(regression[0, :, 4], [-1, 1, -1])  # cy = 100 >= H = 100
    np.testing.assert_array_equal(labels[0, :, 0], [-1, 1, -1])
    np.testing.assert_array_equal(regression[1, :, 4], [1, 1, 1])


def test_image_with_zero_boxes():
    anchors = anchors_for_shape((64, 64))
    regression, labels = anchor_targets_bbox(anchors, [_image(64, 64)], [_ann(np.zeros((0, 4)))], 1)
    boxes = iou_targets(anchors, [_image(64, 64)], [_ann([])], 1)
    centre = (anchors[:, :2] + anchors[:, 2:]) / 2
    outside = (centre >= 64).any(axis=1)  # P7's only centre is (0.5 * 128, 0.5 * 128) = (64, 64)
    assert outside.sum() == 9
    np.testing.assert_array_equal(regression[0, :, 4], np.where(outside, -1, 0))
    np.testing.assert_array_equal(labels[0, :, 0], np.where(outside, -1, 0))
    assert not regression[0, :, :4].any() and not boxes[0, :, :4].any()


def test_stage2_targets_are_absolute_boxes():
    gt = [[0, 0, 10, 10], [50, 60, 80, 90]]
    anchors = np.array([[0, 0, 20, 10], [50, 60, 80, 90], [52, 60, 80, 90]], dtype=float)
    out = stage2_targets(anchors, [_image(200, 200)], [_ann(gt)], 1)
    assert set(out) == {config.IOU_REGRESSION_OUTPUT}
    boxes = out[config.IOU_REGRESSION_OUTPUT]
    assert boxes.shape == (1, 3, 5) and boxes.dtype == np.float32
    # the matched GT's own pixel coordinates, not offsets; state in the last column
    expected = [[0, 0, 10, 10, 1], [50, 60, 80, 90, 1], [50, 60, 80, 90, 1]]
    np.testing.assert_array_equal(boxes[0], expected)


def test_stage1_targets_dict_and_class_column():
    # three classes; the anchor matching the label-2 box is 1 in column 2 only
    anchors = np.array([[0, 0, 10, 10], [100, 100, 110, 110], [0, 0, 10, 24]], dtype=float)
    out = stage1_targets(anchors, [_image(200, 200)], [_ann([[0, 0, 10, 10]], [2])], 3)
    assert set(out) == {config.REGRESSION, config.CLASSIFICATION}
    assert out[config.REGRESSION].shape == (1, 3, 5)
    labels = out[config.CLASSIFICATION][0]
    np.testing.assert_array_equal(labels, [[0, 0, 1], [0, 0, 0], [-1, -1, -1]])
    # the state the focal loss derives, max over classes, equals the regression state column
    np.testing.assert_array_equal(labels.max(axis=1), out[config.REGRESSION][0, :, 4])


def test_tied_overlap_matches_lowest_gt_index():
    # two identical GT boxes with classes 1 and 0: the first (class 1) wins, as np.argmax
    anchors = np.array([[0, 0, 10, 10]], dtype=float)
    _, labels = anchor_targets_bbox(anchors, [_image(50, 50)], [_ann(_GT * 2, [1, 0])], 2)
    np.testing.assert_array_equal(labels[0], [[0, 1]])


def test_bad_annotations_raise_clear_errors():
    anchors = anchors_for_shape((64, 64))
    with pytest.raises(ValueError, match=r"image 0: labels must lie in \[0, 1\)"):
        anchor_targets_bbox(anchors, [_image(64, 64)], [_ann(_GT, [1])], 1)
    with pytest.raises(ValueError, match="image 0: 1 boxes but 2 labels"):
        anchor_targets_bbox(anchors, [_image(64, 64)], [_ann(_GT, [0, 0])], 1)
    with pytest.raises(ValueError, match="1 images but 2 annotation"):
        iou_targets(anchors, [_image(64, 64)], [_ann(_GT), _ann(_GT)], 1)


# --- fast path == brute force ---------------------------------------------------------------


def _brute_force(anchors, image, annotations, negative=0.4, positive=0.5):
    """Full IoU matrix + argmax: the definition of the assignment (§6.1)."""
    gt = annotations["bboxes"]
    n = len(anchors)
    state = np.zeros(n, np.int64)
    matched = np.full(n, -1)
    if len(gt):
        overlaps = compute_overlap(anchors, gt)
        arg = np.argmax(overlaps, axis=1)
        best = overlaps[np.arange(n), arg]
        state[best >= negative] = -1
        state[best >= positive] = 1
        matched[best >= negative] = arg[best >= negative]
    centre = (anchors[:, :2] + anchors[:, 2:]) / 2
    state[(centre[:, 0] >= image.shape[1]) | (centre[:, 1] >= image.shape[0])] = -1
    return state, matched


def _random_gt(rng, height, width, count):
    wh = rng.uniform(4, 400, (count, 2))
    xy = rng.uniform(-30, [width, height], (count, 2))  # some boxes cross the border
    boxes = np.hstack([xy, xy + wh])
    boxes[: count // 3] = np.round(boxes[: count // 3] / 4) * 4  # grid-aligned: exact ties
    return boxes


def _assert_matches_brute_force(anchors, images, annotations, regression, labels, boxes):
    for i, (image, ann) in enumerate(zip(images, annotations)):
        state, matched = _brute_force(anchors, image, ann)
        np.testing.assert_array_equal(regression[i, :, 4], state)
        np.testing.assert_array_equal(labels[i].max(axis=1), state)
        has = matched >= 0
        expected = np.zeros((len(anchors), 4))
        expected[has] = ann["bboxes"][matched[has]]
        np.testing.assert_array_equal(boxes[i, :, :4], expected.astype(np.float32))
        np.testing.assert_array_equal(boxes[i, :, 4], state)


def test_fast_path_equals_brute_force_on_random_boxes(monkeypatch):
    def _no_fallback(*args, **kwargs):
        raise AssertionError("default pyramid anchors must take the fast path")

    monkeypatch.setattr(anchors_mod, "_assign_exact", _no_fallback)
    rng = np.random.default_rng(7)
    positives = 0
    for _ in range(12):
        height, width = (int(v) for v in rng.integers(40, 360, 2))
        images = [_image(height, width), _image(max(height - 17, 8), width)]
        annotations = [
            _ann(_random_gt(rng, height, width, int(rng.integers(0, 60)))),
            _ann(_random_gt(rng, height, width, 5)),
        ]
        anchors = anchors_for_shape((height, width))
        regression, labels = anchor_targets_bbox(anchors, images, annotations, 1)
        boxes = iou_targets(anchors, images, annotations, 1)
        _assert_matches_brute_force(anchors, images, annotations, regression, labels, boxes)
        positives += int((regression[..., 4] == 1).sum())
    assert positives > 500  # the comparison covered many positive anchors


def test_exact_fallback_equals_brute_force_on_arbitrary_anchors():
    rng = np.random.default_rng(11)
    xy = rng.uniform(-20, 300, (20000, 2))
    anchors = np.hstack([xy, xy + rng.uniform(2, 150, (20000, 2))])
    images = [_image(280, 300)]
    annotations = [_ann(_random_gt(rng, 280, 300, 40))]
    regression, labels = anchor_targets_bbox(anchors, images, annotations, 1)
    boxes = iou_targets(anchors, images, annotations, 1)
    _assert_matches_brute_force(anchors, images, annotations, regression, labels, boxes)
    assert (regression[..., 4] == 1).sum() > 50
