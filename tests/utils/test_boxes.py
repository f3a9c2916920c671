"""Tests for utils/boxes.py: IoU without +1, IoMin, greedy NMS (§6.1, §10.8, B11)."""

import numpy as np
import pytest

from object_detector_retinanet.keras_retinanet.utils import boxes as boxes_module
from object_detector_retinanet.keras_retinanet.utils.boxes import (
    box_area,
    compute_iomin,
    compute_overlap,
    non_max_suppression,
    paired_overlap,
)


def test_box_area_has_no_plus_one():
    # (10 - 0) * (10 - 0) = 100 (py-faster-rcnn's +1 would give 121); inverted box -> 0
    areas = box_area([[0, 0, 10, 10], [2, 3, 6, 11], [5, 5, 4, 9]])
    np.testing.assert_array_equal(areas, [100, 4 * 8, 0])


def test_compute_overlap_half_shifted_pair_is_one_third():
    # intersection [5,0,10,10] = 50; union = 100 + 100 - 50 = 150 -> 1/3
    ov = compute_overlap(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 15, 10]]))
    assert ov.shape == (1, 1)
    assert ov[0, 0] == pytest.approx(1 / 3, abs=1e-15)


def test_compute_iomin_half_shifted_pair_is_one_half():
    # intersection 50 / min(100, 100) = 0.5
    assert compute_iomin([[0, 0, 10, 10]], [[5, 0, 15, 10]])[0, 0] == pytest.approx(0.5)


def test_iomin_of_contained_box_is_one_and_zero_area_is_zero():
    # [2,2,4,4] inside [0,0,10,10]: 4 / min(100, 4) = 1; a zero-area box gets 0 (KEEP, §10.8)
    got = compute_iomin([[0, 0, 10, 10]], [[2, 2, 4, 4], [3, 3, 3, 8]])
    np.testing.assert_array_equal(got, [[1.0, 0.0]])


def test_overlap_shapes_disjoint_and_empty_inputs():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]], dtype=float)
    query = np.array([[0, 0, 10, 10], [10, 0, 20, 10]], dtype=float)  # second only touches
    ov = compute_overlap(boxes, query)
    np.testing.assert_array_equal(ov, [[1, 0], [0, 0], [1, 0]])
    assert compute_overlap(np.zeros((0, 4)), query).shape == (0, 2)
    assert compute_iomin(boxes, np.zeros((0, 4))).shape == (3, 0)
    # two empty boxes: union 0 -> IoU 0, not NaN
    assert compute_overlap([[1, 1, 1, 1]], [[1, 1, 1, 1]])[0, 0] == 0.0


def test_bad_box_shape_raises():
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        compute_overlap(np.zeros((3, 5)), np.zeros((1, 4)))


def test_paired_overlap_equals_matrix_entries_bitwise():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 50, (40, 2))
    a = np.hstack([a, a + rng.uniform(0, 30, (40, 2))])
    b = rng.uniform(0, 50, (7, 2))
    b = np.hstack([b, b + rng.uniform(0, 30, (7, 2))])
    full = compute_overlap(a, b)
    i, j = np.meshgrid(np.arange(40), np.arange(7), indexing="ij")
    np.testing.assert_array_equal(paired_overlap(a[i.ravel()], b[j.ravel()]), full.ravel())


def test_b11_final_nms_compares_last_box():
    # B11: the original broke out of the loop once exactly one box was left after taking the
    # best, so with two candidates it kept both. IoMin(A, B) = 64 / min(100, 64) = 1 >= 0.3.
    boxes = np.array([[0, 0, 10, 10], [1, 1, 9, 9]], dtype=float)
    keep = non_max_suppression(boxes, np.array([0.9, 0.8]), 0.3)
    np.testing.assert_array_equal(keep, [0])
    assert keep.dtype == np.int64


def test_nms_returns_original_order_not_score_order():
    # three disjoint boxes, scores ascending with the index: all kept, ascending indices (KEEP)
    boxes = np.array([[0, 0, 5, 5], [10, 0, 15, 5], [20, 0, 25, 5]], dtype=float)
    np.testing.assert_array_equal(non_max_suppression(boxes, [0.1, 0.5, 0.9], 0.3), [0, 1, 2])


def test_nms_suppresses_at_equality():
    # IoMin = 30 / 100 = 0.3 exactly: suppressed at threshold 0.3 (>=), kept at 0.31
    boxes = np.array([[0, 0, 10, 10], [7, 0, 17, 10]], dtype=float)
    np.testing.assert_array_equal(non_max_suppression(boxes, [0.9, 0.8], 0.3), [0])
    np.testing.assert_array_equal(non_max_suppression(boxes, [0.9, 0.8], 0.31), [0, 1])


def test_nms_iomin_versus_iou():
    # B = [0,0,10,4] inside A: IoMin = 40 / 40 = 1, IoU = 40 / 100 = 0.4
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 4]], dtype=float)
    np.testing.assert_array_equal(non_max_suppression(boxes, [0.9, 0.8], 0.5), [0])
    np.testing.assert_array_equal(non_max_suppression(boxes, [0.9, 0.8], 0.5, "iou"), [0, 1])
    with pytest.raises(ValueError, match="overlap"):
        non_max_suppression(boxes, [0.9, 0.8], 0.5, "giou")


def test_nms_is_greedy_suppressed_boxes_do_not_suppress():
    # A [0,0,10,10] 0.9 suppresses B [6,0,16,10] 0.8 (IoMin 0.4); B would suppress
    # C [12,0,22,10] 0.7 (IoMin 0.4) but C does not touch A, so C survives.
    boxes = np.array([[0, 0, 10, 10], [6, 0, 16, 10], [12, 0, 22, 10]], dtype=float)
    np.testing.assert_array_equal(non_max_suppression(boxes, [0.9, 0.8, 0.7], 0.3), [0, 2])


def test_nms_ties_take_lower_index_first():
    # equal scores: index 0 is ranked first, so it suppresses index 1 and not the other way
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 8], [50, 50, 60, 60]], dtype=float)
    keep = non_max_suppression(boxes, [0.5, 0.5, 0.1], 0.3)
    np.testing.assert_array_equal(keep, [0, 2])
    boxes_swapped = boxes[[1, 0, 2]]
    np.testing.assert_array_equal(non_max_suppression(boxes_swapped, [0.5, 0.5, 0.1], 0.3), [0, 2])


def test_nms_empty_and_mismatched_inputs():
    assert non_max_suppression(np.zeros((0, 4)), np.zeros(0), 0.3).shape == (0,)
    with pytest.raises(ValueError, match="scores"):
        non_max_suppression(np.zeros((2, 4)), np.zeros(3), 0.3)


def _brute_force_nms(boxes, scores, threshold, kind):
    """Greedy NMS on the full matrix: the definition the fast version must match."""
    matrix = compute_iomin(boxes, boxes) if kind == "iomin" else compute_overlap(boxes, boxes)
    suppressed = np.zeros(len(boxes), dtype=bool)
    keep = []
    for i in np.argsort(-np.asarray(scores, float), kind="stable"):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= matrix[i] >= threshold
    return np.sort(np.array(keep, dtype=np.int64))


@pytest.mark.parametrize("path", ["auto", "pairs", "windows"])
@pytest.mark.parametrize("kind", ["iomin", "iou"])
def test_nms_equals_brute_force_on_random_boxes(kind, path, monkeypatch):
    # Both internal strategies (pair list for sparse inputs, per-kept-box windows for dense ones)
    # must give the brute-force result; "auto" lets the pair-count rule choose.
    if path != "auto":
        monkeypatch.setattr(boxes_module, "_PAIRS_FREE", 10**9 if path == "pairs" else -(10**9))
    rng = np.random.default_rng(123)
    for trial in range(60):
        n = int(rng.integers(1, 150))
        xy = rng.uniform(0, 120, (n, 2))
        wh = rng.uniform(0, 40, (n, 2))
        wh[rng.random(n) < 0.05] = 0  # some zero-area boxes
        boxes = np.hstack([xy, xy + wh])
        if trial % 2:
            boxes = np.round(boxes)  # exact ties in overlap
        scores = rng.integers(0, 4, n).astype(float) if trial % 3 == 0 else rng.random(n)
        threshold = float(rng.choice([0.0, 0.3, 0.5, 0.7, 1.0]))
        got = non_max_suppression(boxes, scores, threshold, kind)
        np.testing.assert_array_equal(got, _brute_force_nms(boxes, scores, threshold, kind))
