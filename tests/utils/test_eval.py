"""Tests for utils/eval.py: COCO metrics under the SKU-110K protocol (§12), counting, joining.

Hand arithmetic uses COCOeval's rules: detections sorted by score over all images, precision made
monotone (max over higher recall), then sampled at the 101 recall points 0.00, 0.01, ..., 1.00 by
taking the first detection whose recall reaches the point (0 when none does). AP is the mean of
those 101 values (and over the ten IoU thresholds 0.50, 0.55, ..., 0.95 for AP@[.5:.95]).
COCOeval divides by tp + fp + eps, so "1" comes back as 1 - 2e-16: compare with approx.
"""

import math

import numpy as np
import pytest

from object_detector_retinanet.keras_retinanet.utils import eval as ev

approx = pytest.approx


def _dets(boxes, scores):
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.hstack([boxes, np.asarray(scores, dtype=np.float64).reshape(-1, 1)])


def _grid(n, size=20, gap=5, per_row=15):
    """n disjoint size×size boxes on a grid (every pairwise IoU is 0)."""
    step = size + gap
    return np.array(
        [
            [
                (i % per_row) * step,
                (i // per_row) * step,
                (i % per_row) * step + size,
                (i // per_row) * step + size,
            ]
            for i in range(n)
        ],
        dtype=np.float64,
    )


# --- to_coco_xywh ---------------------------------------------------------------------------------
def test_to_coco_xywh_hand_values():
    # [x1, y1, x2, y2] = [10, 20, 30, 60] → [x, y, w, h] = [10, 20, 30 - 10, 60 - 20]
    np.testing.assert_array_equal(ev.to_coco_xywh(np.array([[10, 20, 30, 60]])), [[10, 20, 20, 40]])
    np.testing.assert_array_equal(ev.to_coco_xywh([10, 20, 30, 60]), [10, 20, 20, 40])
    # A score column is dropped; two boxes stay two rows.
    np.testing.assert_array_equal(
        ev.to_coco_xywh([[0, 0, 5, 5, 0.9], [1, 2, 4, 8, 0.1]]), [[0, 0, 5, 5], [1, 2, 3, 6]]
    )
    assert ev.to_coco_xywh(np.zeros((0, 4))).shape == (0, 4)
    with pytest.raises(ValueError, match="shape"):
        ev.to_coco_xywh([[1, 2, 3]])


def test_boxes_reach_pycocotools_as_xywh():
    # GT [100, 100, 110, 110], detection shifted by (2, 2): intersection 8·8 = 64, union
    # 100 + 100 - 64 = 136, IoU = 0.47 < 0.5 → no match, AP50 = 0.
    # The community bug (§12.2) passed [x1, y1, x2, y2] as [x, y, w, h]: two 110×110 boxes
    # offset by 2 → IoU 108²/(2·110² − 108²) = 0.93 → AP50 would be 1.
    gt = {"a": np.array([[100, 100, 110, 110]])}
    dets = {"a": _dets([[102, 102, 112, 112]], [0.9])}
    metrics = ev.coco_metrics(gt, dets)
    assert metrics["AP50"] == 0.0
    assert metrics["AR300_IoU50"] == 0.0


# --- COCO metrics ---------------------------------------------------------------------------------
def test_perfect_detections_score_one():
    gt = {"a": _grid(3), "b": _grid(5)}
    dets = {"a": _dets(_grid(3), [0.9, 0.8, 0.7]), "b": _dets(_grid(5), [0.95] * 5)}
    metrics = ev.evaluate_detections(gt, dets)
    for key in ("AP", "AP50", "AP75", "AR300", "AR300_IoU50", "P@R=.5_IoU75", "P@R=.5_IoU50"):
        assert metrics[key] == approx(1.0), key
    assert metrics["MAE"] == 0.0 and metrics["RMSE"] == 0.0
    assert metrics["num_images"] == 2
    assert metrics["max_dets"] == 300


def test_no_detections_score_zero():
    gt = {"a": _grid(3), "b": _grid(1)}
    metrics = ev.evaluate_detections(gt, {})
    for key in ("AP", "AP50", "AP75", "AR300", "P@R=.5_IoU75"):
        assert metrics[key] == 0.0, key
    # counts: |0 - 3| and |0 - 1| → MAE (3 + 1) / 2 = 2, RMSE sqrt((9 + 1) / 2) = sqrt(5)
    assert metrics["MAE"] == approx(2.0)
    assert metrics["RMSE"] == approx(math.sqrt(5.0))


def test_hand_case_one_exact_one_at_iou_064():
    # GT: A = [0, 0, 100, 100], B = [200, 0, 300, 100].
    # Detections: A exactly (score 0.9); B' = [200, 0, 300, 64] (score 0.8),
    # IoU(B, B') = (100·64) / (100·100) = 0.64.
    gt = {"img": np.array([[0, 0, 100, 100], [200, 0, 300, 100]])}
    dets = {"img": _dets([[0, 0, 100, 100], [200, 0, 300, 64]], [0.9, 0.8])}
    metrics = ev.coco_metrics(gt, dets)
    # IoU thresholds 0.50, 0.55, 0.60 (3 of 10): both match → precision 1 at every recall point.
    assert metrics["AP50"] == approx(1.0)
    # IoU thresholds 0.65 ... 0.95 (7 of 10): A matches, B' is a false positive.
    #   in score order: tp = [1, 1], fp = [0, 1] → recall [0.5, 0.5], precision [1, 0.5]
    #   → recall points 0.00..0.50 (51 points) take precision 1; 0.51..1.00 (50 points) get 0.
    #   AP75 = 51 / 101 = 0.50495
    assert metrics["AP75"] == approx(51 / 101)
    # AP = (3 · 1 + 7 · 51/101) / 10 = 0.65347
    assert metrics["AP"] == approx((3 + 7 * 51 / 101) / 10)
    # AR = mean recall over the 10 thresholds = (3 · 1 + 7 · 0.5) / 10 = 0.65
    assert metrics["AR300"] == approx(0.65)
    # P@R=.5 at IoU .75 = precision at recall point 0.50 = 1 (reached by the first detection).
    assert metrics["P@R=.5_IoU75"] == approx(1.0)
    assert metrics["P@R=.5_IoU50"] == approx(1.0)


def test_hand_case_score_order_matters():
    # Same boxes, but the IoU-0.64 detection now has the higher score.
    gt = {"img": np.array([[0, 0, 100, 100], [200, 0, 300, 100]])}
    dets = {"img": _dets([[0, 0, 100, 100], [200, 0, 300, 64]], [0.8, 0.9])}
    metrics = ev.coco_metrics(gt, dets)
    assert metrics["AP50"] == approx(1.0)
    # At IoU .75: score order is B' (fp) then A (tp): recall [0, 0.5], precision [0, 0.5]
    #   → monotone envelope [0.5, 0.5] → points 0.00..0.50 get 0.5, the rest 0.
    #   AP75 = 0.5 · 51 / 101 = 0.25248
    assert metrics["AP75"] == approx(0.5 * 51 / 101)
    assert metrics["P@R=.5_IoU75"] == approx(0.5)
    assert metrics["AR300"] == approx(0.65)  # recall does not depend on the order


def test_more_than_100_detections_per_image_use_300_slot():
    # 150 disjoint GT boxes, 150 exact detections with distinct scores.
    boxes = _grid(150)
    gt = {"shelf": boxes}
    dets = {"shelf": _dets(boxes, np.linspace(0.99, 0.5, 150))}
    metrics = ev.coco_metrics(gt, dets)  # max_dets = 300
    assert metrics["AP"] == approx(1.0)
    assert metrics["AR300"] == approx(1.0)
    # What a maxDets=100 evaluation would give: the best 100 are all correct, so recall stops at
    # 100/150 = 0.667 → recall points 0.00..0.66 (67 points) have precision 1 → AP = 67/101.
    capped = ev.coco_metrics(gt, dets, max_dets=100)
    assert capped["max_dets"] == 100
    assert capped["AP"] == approx(67 / 101)
    assert capped["AR100"] == approx(100 / 150)


def test_image_with_gt_but_no_detections_counts():
    # "a" found exactly, "b" missing from the detections: recall 1/2 → 51 of 101 points at 1.
    gt = {"a": np.array([[0, 0, 10, 10]]), "b": np.array([[0, 0, 10, 10]])}
    dets = {"a": _dets([[0, 0, 10, 10]], [0.9])}
    metrics = ev.evaluate_detections(gt, dets)
    assert metrics["AP"] == approx(51 / 101)
    assert metrics["AR300"] == approx(0.5)
    assert metrics["num_images"] == 2
    # counts (c, ĉ): a (1, 1), b (1, 0) → MAE 0.5, RMSE sqrt(1/2)
    assert metrics["MAE"] == approx(0.5)
    assert metrics["RMSE"] == approx(math.sqrt(0.5))


def test_image_with_detections_but_no_gt_counts_as_false_positives():
    # "b" has no GT; its detection (0.9) outranks the correct one on "a" (0.8):
    # tp = [0, 1], fp = [1, 1] → recall [0, 1], precision [0, 0.5] → envelope 0.5 at all 101
    # points, at every IoU threshold → AP = 0.5. Recall is still 1.
    gt = {"a": np.array([[0, 0, 10, 10]])}
    dets = {"a": _dets([[0, 0, 10, 10]], [0.8]), "b": _dets([[0, 0, 10, 10]], [0.9])}
    metrics = ev.evaluate_detections(gt, dets)
    assert metrics["AP"] == approx(0.5)
    assert metrics["AR300"] == approx(1.0)
    assert metrics["num_images"] == 2
    # counts (c, ĉ): a (1, 1), b (0, 1) → MAE 0.5, RMSE sqrt(1/2)
    assert metrics["MAE"] == approx(0.5)
    assert metrics["RMSE"] == approx(math.sqrt(0.5))


def test_no_gt_boxes_at_all_gives_nan_not_minus_one():
    metrics = ev.coco_metrics({"a": np.zeros((0, 4))}, {"a": _dets([[0, 0, 5, 5]], [0.9])})
    assert math.isnan(metrics["AP"]) and math.isnan(metrics["AR300"])


def test_accepts_annotation_dicts_and_rejects_bad_shapes():
    gt = {"a": {"bboxes": _grid(2), "labels": np.zeros(2, np.int64)}}
    assert ev.coco_metrics(gt, {"a": _dets(_grid(2), [0.9, 0.8])})["AP"] == approx(1.0)
    with pytest.raises(ValueError, match="'a'"):
        ev.coco_metrics(gt, {"a": np.ones((2, 4))})  # no score column


# --- counting -------------------------------------------------------------------------------------
def test_count_errors_hand_values():
    # diffs ĉ − c = [12 − 10, 17 − 20, 30 − 30] = [2, −3, 0]
    # MAE = (2 + 3 + 0) / 3 = 5/3; RMSE = sqrt((4 + 9 + 0) / 3) = sqrt(13/3)
    errors = ev.count_errors([10, 20, 30], [12, 17, 30])
    assert errors["MAE"] == approx(5 / 3)
    assert errors["RMSE"] == approx(math.sqrt(13 / 3))
    with pytest.raises(ValueError, match="length"):
        ev.count_errors([1, 2], [1])
    with pytest.raises(ValueError):
        ev.count_errors([], [])


def test_count_threshold_is_strict_and_none_counts_all():
    gt = {"a": _grid(2)}
    dets = {"a": _dets(_grid(3), [0.9, 0.5, 0.3])}
    # ĉ = #(score > 0.5) = 1 (0.5 itself does not count) vs c = 2 → MAE 1
    assert ev.evaluate_detections(gt, dets)["MAE"] == approx(1.0)
    assert ev.evaluate_detections(gt, dets, count_threshold=0.5)["count_threshold"] == 0.5
    # None counts every detection: ĉ = 3; threshold 0.4 counts 0.9 and 0.5: ĉ = 2.
    _, gt_counts, pred_counts = ev.image_counts(gt, dets, count_threshold=None)
    assert gt_counts.tolist() == [2] and pred_counts.tolist() == [3]
    _, _, pred_counts = ev.image_counts(gt, dets, count_threshold=0.4)
    assert pred_counts.tolist() == [2]


# --- joining with the GT --------------------------------------------------------------------------
def test_align_detections_fills_missing_and_rejects_unknown():
    dets = {"b.jpg": _dets([[0, 0, 1, 1]], [0.9])}
    aligned, missing = ev.align_detections(["a.jpg", "b.jpg"], dets)
    assert list(aligned) == ["a.jpg", "b.jpg"] and missing == ["a.jpg"]
    assert aligned["a.jpg"].shape == (0, 5)
    with pytest.raises(ValueError, match="1 image.* not in gt.csv: c.jpg"):
        ev.align_detections(["a.jpg"], {"c.jpg": dets["b.jpg"]}, gt_source="gt.csv")


# --- plots ----------------------------------------------------------------------------------------
def test_plots_are_written_as_png(tmp_path):
    gt = {"a": _grid(3), "b": _grid(2)}
    dets = {"a": _dets(_grid(3), [0.9, 0.8, 0.3])}
    ev.evaluate_detections(gt, dets, plot_dir=tmp_path / "plots")
    for name in (ev.PR_PLOT_NAME, ev.COUNT_PLOT_NAME):
        data = (tmp_path / "plots" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
