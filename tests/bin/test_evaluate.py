"""End-to-end tests of bin/evaluate.py on a tiny hand-made GT + results pair (§12.2)."""

import json
import math
import os
import subprocess
import sys

import pytest

from object_detector_retinanet.keras_retinanet.bin import evaluate
from object_detector_retinanet.keras_retinanet.utils import eval as ev

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(
    REPO_ROOT, "object_detector_retinanet", "keras_retinanet", "bin", "evaluate.py"
)

# The GT reader comes from preprocessing/csv_generator.py (api.md); the CLI needs it.
GT_READER = "object_detector_retinanet.keras_retinanet.preprocessing.csv_generator"
needs_gt_reader = pytest.mark.skipif(
    GT_READER not in sys.modules
    and not os.path.exists(os.path.join(REPO_ROOT, *GT_READER.split(".")) + ".py"),
    reason="preprocessing/csv_generator.py (parse_annotations) not in the tree yet",
)

# 3 images, 4 GT boxes (8-column SKU-110K format, no header).
GT_CSV = (
    "test_0.jpg,0,0,100,100,object,400,300\n"
    "test_0.jpg,200,0,300,100,object,400,300\n"
    "test_1.jpg,10,10,60,60,object,400,300\n"
    "test_2.jpg,0,0,50,50,object,400,300\n"
)
# test_0 and test_1 found exactly; test_2 has no row (→ zero detections, with a warning).
RESULTS_CSV = (
    "image_id,x1,y1,x2,y2,confidence,hard_score\n"
    "images/test_0.jpg,0,0,100,100,0.9,0.4\n"
    "images/test_0.jpg,200,0,300,100,0.8,0.6\n"
    "images/test_1.jpg,10,10,60,60,0.7,0.7\n"
)


@pytest.fixture
def pair(tmp_path):
    gt = tmp_path / "annotations_test.csv"
    gt.write_text(GT_CSV, encoding="utf-8")
    results = tmp_path / "detections.csv"
    results.write_text(RESULTS_CSV, encoding="utf-8")
    return str(results), str(gt)


@needs_gt_reader
def test_main_end_to_end(pair, tmp_path, capsys):
    results, gt = pair
    out_json = tmp_path / "out" / "metrics.json"
    plots = tmp_path / "plots"
    metrics = evaluate.main(
        [results, "--annotations", gt, "--json", str(out_json), "--plots", str(plots)]
    )
    # 3 of 4 GT boxes found, all detections correct and ranked first: recall 3/4 at every IoU,
    # precision 1 → recall points 0.00..0.75 (76 of 101) at 1 → AP = 76/101 = 0.752.
    assert metrics["AP"] == pytest.approx(76 / 101)
    assert metrics["AP75"] == pytest.approx(76 / 101)
    assert metrics["AR300"] == pytest.approx(0.75)
    # counts (c, ĉ with confidence > 0.5): (2, 2), (1, 1), (1, 0) → MAE 1/3, RMSE sqrt(1/3)
    assert metrics["MAE"] == pytest.approx(1 / 3)
    assert metrics["RMSE"] == pytest.approx(math.sqrt(1 / 3))
    assert metrics["num_images"] == 3

    captured = capsys.readouterr()
    assert "1 of 3 GT images have no rows" in captured.err
    assert "0.492" in captured.out  # the paper's full-approach AP is printed beside ours

    report = json.loads(out_json.read_text(encoding="utf-8"))
    assert report["metrics"]["AP"] == pytest.approx(76 / 101)
    assert report["settings"]["images_without_results"] == 1
    assert report["settings"]["score_field"] == "confidence"
    for name in (ev.PR_PLOT_NAME, ev.COUNT_PLOT_NAME):
        assert (plots / name).read_bytes()[:4] == b"\x89PNG"


@needs_gt_reader
def test_score_field_hard_score_changes_ranking_and_counts(pair):
    results, gt = pair
    metrics = evaluate.main([results, "--annotations", gt, "--score-field", "hard_score"])
    # Every detection is still correct, so AP is unchanged; counts with hard_score > 0.5:
    # test_0 has 0.4 and 0.6 → ĉ = 1 vs c = 2; test_1 (1, 1); test_2 (1, 0) → MAE 2/3
    assert metrics["AP"] == pytest.approx(76 / 101)
    assert metrics["MAE"] == pytest.approx(2 / 3)
    every = evaluate.main([results, "--annotations", gt, "--count-threshold", "all"])
    # every detection counted: (2, 2), (1, 1), (1, 0) → MAE 1/3
    assert every["MAE"] == pytest.approx(1 / 3)
    assert every["count_threshold"] is None


@needs_gt_reader
def test_results_for_unknown_images_are_an_error(pair, tmp_path):
    results, gt = pair
    with open(results, "a", encoding="utf-8") as f:
        f.write("images/val_7.jpg,1,1,5,5,0.9,0.9\n")
    with pytest.raises(
        ValueError,
        match=r"1 image\(s\) in .*detections.csv are not in .*"
        r"annotations_test.csv: val_7.jpg",
    ):
        evaluate.main([results, "--annotations", gt])


@needs_gt_reader
def test_default_annotations_under_data_root(pair, tmp_path, monkeypatch):
    results, gt = pair
    root = tmp_path / "root"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "annotations_test.csv").write_text(GT_CSV, encoding="utf-8")
    monkeypatch.setenv("SKU110K_ROOT", str(root))
    assert evaluate.parse_args([results]).annotations == str(
        root / "annotations" / "annotations_test.csv"
    )
    assert evaluate.main([results])["num_images"] == 3


@needs_gt_reader
def test_runs_as_a_file_with_pythonpath(pair):
    results, gt = pair
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    proc = subprocess.run(
        [sys.executable, SCRIPT, results, "--annotations", gt],
        capture_output=True,
        text=True,
        env=env,
        cwd=os.path.dirname(gt),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "AP@[.50:.95]" in proc.stdout and "0.752" in proc.stdout


@needs_gt_reader
def test_malformed_results_row_exits_2_with_one_line(pair):
    results, gt = pair
    with open(results, "a", encoding="utf-8") as f:
        f.write("images/test_2.jpg,0,0,abc,50,0.9,0.9\n")  # line 5: header + 3 rows before it
    proc = subprocess.run(
        [sys.executable, SCRIPT, results, "--annotations", gt],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=REPO_ROOT),
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {results} line 5: malformed x2: 'abc'"
    assert "Traceback" not in proc.stderr


def test_missing_files_and_bad_flags_exit_with_usage(pair, tmp_path, capsys):
    results, gt = pair
    with pytest.raises(SystemExit):
        evaluate.parse_args([str(tmp_path / "nope.csv"), "--annotations", gt])
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.parse_args([results, "--annotations", gt, "--max-dets", "0"])
    with pytest.raises(SystemExit):
        evaluate.parse_args([results, "--annotations", gt, "--score-field", "soft"])
    args = evaluate.parse_args([results, "--annotations", gt, "--count-threshold", "all"])
    assert args.count_threshold is None and args.max_dets == 300


def test_console_script_is_declared():
    with open(os.path.join(REPO_ROOT, "setup.py"), encoding="utf-8") as f:
        assert "sku110k-evaluate=" in f.read()
    assert callable(evaluate.main)
