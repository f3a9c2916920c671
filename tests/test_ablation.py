"""ablation.py: the paper's table re-merged from raw detections, scored as evaluate.py scores."""

import math

import numpy as np
import pytest

from object_detector_retinanet.keras_retinanet import ablation
from object_detector_retinanet.keras_retinanet.config import SELECTIONS, SOFT_SELECTIONS
from object_detector_retinanet.keras_retinanet.utils.raw_detections import (
    RawDetections,
    iter_raw,
    save_raw,
)

# Two GT boxes in a.jpg, one in b.jpg (which has raw detections but none above the threshold).
GT = {
    "a.jpg": np.array([[10, 10, 60, 60], [100, 100, 150, 150]], dtype=np.float64),
    "b.jpg": np.array([[20, 20, 70, 70]], dtype=np.float64),
}
# Object 1: an exact box (hard .9, soft .92) and a shifted one (IoU .85 with it; hard .85,
# soft .3). Object 2: a shifted box ranked first by objectness (IoU .73 with the GT: a match at
# IoU .50-.70 only; hard .8, soft .24) and the exact box ranked first by Soft-IoU (hard .6,
# soft .9).
BOXES = [[10, 10, 60, 60], [12, 12, 62, 62], [104, 104, 154, 154], [100, 100, 150, 150]]
HARD = [0.9, 0.85, 0.8, 0.6]
SOFT = [0.92, 0.3, 0.24, 0.9]


def _raws(soft=True):
    a = RawDetections(
        image_name="a.jpg",
        image_shape=(200, 200),
        boxes=np.array(BOXES, dtype=np.float64),
        hard=np.array(HARD),
        soft=np.array(SOFT) if soft else None,
        labels=np.zeros(4, dtype=np.int64),
    )
    empty = np.zeros(0)
    b = RawDetections("b.jpg", (200, 200), np.zeros((0, 4)), empty, empty if soft else None, empty)
    return [a, b]


@pytest.fixture
def raw_dir(tmp_path):
    for raw in _raws():
        save_raw(tmp_path / "raw", raw)
    return tmp_path / "raw"


def _rows(report):
    return {row["setting"]: row for row in report["rows"]}


# Base (objectness) keeps the shifted box of object 2: both objects found at IoU .50-.70, one at
# .75-.95, of 3 GT boxes → AP_t = 67/101 (recall 2/3) or 34/101 (recall 1/3); AP = 101/202.
BASE = {"AP": 101 / 202, "AP75": 34 / 101, "AR300": 0.5, "AP50": 67 / 101}
# The Soft-IoU score keeps both exact boxes: recall 2/3 at every IoU.
SOFT_IOU = {"AP": 67 / 101, "AP75": 67 / 101, "AR300": 2 / 3, "AP50": 67 / 101}
# Counts (confidence > .5): a.jpg 2 of 2, b.jpg 0 of 1 → MAE .5, RMSE sqrt(.5), in every row.
COUNTS = {"MAE": 0.5, "RMSE": math.sqrt(0.5)}


def test_the_paper_rows_on_hand_made_detections(raw_dir):
    report = ablation.ablate_folder(raw_dir, GT, progress=False)
    rows = _rows(report)
    expected = {
        "Base & NMS": BASE,
        "Soft-IoU & NMS": SOFT_IOU,
        "Base & EM-Merger": BASE,
        # 0.75 hard + 0.25 soft (the original selection at r = .5): the exact boxes win.
        "Soft-IoU & EM-Merger": SOFT_IOU,
        "Soft-IoU & EM-Merger, selection hard": BASE,
        "Soft-IoU & EM-Merger, selection soft_iou": SOFT_IOU,
        "Soft-IoU & EM-Merger, selection confidence": SOFT_IOU,
    }
    for name, values in expected.items():
        metrics = rows[name]["metrics"]
        for key, value in {**values, **COUNTS}.items():
            assert metrics[key] == pytest.approx(value), (name, key)
        assert rows[name]["num_detections"] == 2, name
    assert [row["setting"] for row in report["rows"][:4]] == [
        "Base & NMS",
        "Soft-IoU & NMS",
        "Base & EM-Merger",
        "Soft-IoU & EM-Merger",
    ]
    assert len(report["rows"]) == 4 + len(SELECTIONS) - 1
    assert report["images_without_raw"] == []
    assert report["settings"]["num_gt_boxes"] == 3


def test_the_full_row_is_evaluate_on_the_merged_results_csv(tmp_path):
    from object_detector_retinanet.keras_retinanet.bin import evaluate
    from object_detector_retinanet.keras_retinanet.utils.results_csv import ResultsWriter

    rng = np.random.default_rng(3)
    gt_lines, raws = [], []
    for i in range(3):
        name = f"test_{i}.jpg"
        corners = rng.uniform(0, 150, (6, 2))
        gt_boxes = np.hstack([corners, corners + rng.uniform(20, 45, (6, 2))])
        gt_lines += [
            f"{name},{','.join(str(int(v)) for v in box)},object,200,200" for box in gt_boxes
        ]
        boxes = np.repeat(gt_boxes, 5, axis=0) + rng.normal(0, 3, (30, 4))
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 2)
        # float32 scores, as the network gives them
        hard = rng.uniform(0.1, 1, 30).astype(np.float32).astype(np.float64)
        soft = rng.uniform(0, 1, 30).astype(np.float32).astype(np.float64)
        raws.append(RawDetections(name, (200, 200), boxes, hard, soft, np.zeros(30, np.int64)))
    gt_csv = tmp_path / "gt.csv"
    gt_csv.write_text("\n".join(gt_lines) + "\n")
    gt = evaluate.read_ground_truth(str(gt_csv), evaluate.config.DEFAULT_CLASS_FILE)

    report = ablation.ablation_report(raws, gt, progress=False)
    for setting in ablation.settings():
        results = tmp_path / f"{setting.name}.csv"
        with ResultsWriter(results) as writer:
            for raw in raws:
                writer.write_image(f"images/{raw.image_name}", setting.merge(raw))
        expected = evaluate.main([str(results), "--annotations", str(gt_csv)])
        assert _rows(report)[setting.name]["metrics"] == expected, setting.name


def test_raw_files_without_soft_scores_skip_the_soft_rows(tmp_path):
    for raw in _raws(soft=False):
        save_raw(tmp_path, raw)
    report = ablation.ablate_folder(tmp_path, GT, progress=False)
    for row in report["rows"]:
        if row["setting"] in ("Base & NMS", "Base & EM-Merger"):
            assert row["metrics"]["AP"] == pytest.approx(BASE["AP"])
            assert row["skipped"] is None
        else:
            assert row["metrics"] is None and row["skipped"] == ablation.NO_SOFT
    text = ablation.format_text(report)
    assert f"Soft-IoU & NMS: {ablation.NO_SOFT}" in text


def test_soft_selections_are_skipped_at_r_1(raw_dir):
    report = ablation.ablate_folder(raw_dir, GT, hard_score_rate=1.0, progress=False)
    for row in report["rows"]:
        if row["selection"] in SOFT_SELECTIONS:
            assert row["skipped"] == ablation.SOFT_AT_R1
        else:
            assert row["metrics"] is not None
    assert _rows(report)["Soft-IoU & EM-Merger"]["metrics"]["AP"] == pytest.approx(BASE["AP"])


def test_merger_rows_are_predicts_rows_bit_for_bit():
    from object_detector_retinanet.keras_retinanet.inference import raw_detections

    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 100, (50, 2)).astype(np.float32)
    boxes = np.hstack([corners, corners + rng.uniform(5, 30, (50, 2)).astype(np.float32)])
    hard = rng.uniform(0.11, 1, 50).astype(np.float32)
    soft = rng.uniform(0, 1, 50).astype(np.float32)
    labels = np.zeros(50, np.int64)
    # As predict saves them: boxes in float64 pixels, scores in the network's float32.
    raw = RawDetections("x.jpg", (140, 140), boxes.astype(np.float64), hard, soft, labels)
    for rate in (0.0, 0.3, 0.5, 1.0):
        predicted = raw_detections(boxes, hard, soft, labels, 1.0, hard_score_rate=rate)
        np.testing.assert_array_equal(ablation.merger_rows(raw, rate), predicted)


def test_unknown_images_mixed_files_and_duplicates_are_input_errors(raw_dir, tmp_path):
    with pytest.raises(ablation.InputError, match="b.jpg, which is not in the ground truth"):
        ablation.ablate_folder(raw_dir, {"a.jpg": GT["a.jpg"]}, progress=False)
    a, b = _raws()
    _, b_without = _raws(soft=False)
    with pytest.raises(ablation.InputError, match="with and without the Soft-IoU score"):
        ablation.ablation_report([a, b_without], GT, progress=False)
    with pytest.raises(ablation.InputError, match="two raw-detections files of the image a.jpg"):
        ablation.ablation_report([a, a], GT, progress=False)


def test_gt_images_without_raw_files_count_as_empty(tmp_path):
    save_raw(tmp_path, _raws()[0])
    report = ablation.ablate_folder(tmp_path, GT, progress=False)
    assert report["images_without_raw"] == ["b.jpg"]
    assert _rows(report)["Base & NMS"]["metrics"]["MAE"] == pytest.approx(0.5)


def test_outputs_hold_the_same_numbers(raw_dir, tmp_path):
    import csv

    report = ablation.ablate_folder(raw_dir, GT, progress=False)
    csv_path, json_path, md_path = ablation.write_outputs(report, tmp_path / "out")
    back = ablation.read_report(json_path)
    assert back["rows"] == report["rows"]
    assert back["paper"]["Base & NMS"]["AP"] == 0.413
    with open(csv_path, newline="") as f:
        table = list(csv.DictReader(f))
    assert [row["setting"] for row in table] == [row["setting"] for row in report["rows"]]
    for row, ours in zip(table, report["rows"]):
        for key in ("AP", "AP50", "AP75", "AR300", "P@R=.5_IoU75", "MAE", "RMSE"):
            assert float(row[key]) == ours["metrics"][key]
    markdown = open(md_path, encoding="utf-8").read()
    assert f"| Base & NMS | 1 | {BASE['AP']:.3f} |" in markdown
    assert ablation.format_text(back) == ablation.format_text(report)
    assert raw_dir.exists() and len(list(iter_raw(raw_dir))) == 2


@pytest.mark.slow
def test_a_worker_pool_gives_the_same_report(raw_dir):
    serial = ablation.ablate_folder(raw_dir, GT, progress=False)
    assert ablation.ablate_folder(raw_dir, GT, processes=2, progress=False) == serial
