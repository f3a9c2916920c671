"""bin/ablation.py: the command line, its errors, and the table on a real predict run (slow)."""

import contextlib
import glob
import io
import os
import subprocess
import sys

import pytest

from object_detector_retinanet.keras_retinanet.bin import ablation, evaluate, predict
from object_detector_retinanet.keras_retinanet.utils.raw_detections import save_raw
from tests.test_ablation import BASE, GT, _raws

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(
    REPO_ROOT, "object_detector_retinanet", "keras_retinanet", "bin", "ablation.py"
)
GT_CSV = (
    "a.jpg,10,10,60,60,object,200,200\n"
    "a.jpg,100,100,150,150,object,200,200\n"
    "b.jpg,20,20,70,70,object,200,200\n"
)


@pytest.fixture
def inputs(tmp_path):
    for raw in _raws():
        save_raw(tmp_path / "raw", raw)
    gt = tmp_path / "annotations_test.csv"
    gt.write_text(GT_CSV, encoding="utf-8")
    return str(tmp_path / "raw"), str(gt)


def test_main_prints_and_writes_the_table(inputs, tmp_path, capsys):
    raw_dir, gt = inputs
    report = ablation.main([raw_dir, "--annotations", gt, "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "Base & NMS" in out and "Soft-IoU & EM-Merger, selection soft_iou" in out
    assert f"{BASE['AP']:.3f}" in out and "0.413" in out  # ours, then the paper's row
    for name in ("ablation.csv", "ablation.json", "ablation.md"):
        assert (tmp_path / "out" / name).is_file()
    assert report["rows"][0]["metrics"]["AP"] == pytest.approx(BASE["AP"])
    assert len(GT) == report["settings"]["num_images"]


def test_hard_score_rate_flag_sets_the_full_row(inputs):
    raw_dir, gt = inputs
    report = ablation.main([raw_dir, "--annotations", gt, "--hard_score_rate", "0.25"])
    assert report["rows"][3]["hard_score_rate"] == 0.25
    with pytest.raises(SystemExit) as error:
        ablation.parse_args([raw_dir, "--annotations", gt, "--hard_score_rate", "2"])
    assert error.value.code == 2


@pytest.mark.parametrize(
    "which, message",
    [
        ("folder", "error: raw-detections folder not found"),
        ("empty", "no raw-detections files"),
        ("gt", "b.jpg, which is not in the ground truth"),
    ],
)
def test_bad_input_exits_2_with_one_line(inputs, tmp_path, capsys, which, message):
    raw_dir, gt = inputs
    if which == "folder":
        raw_dir = str(tmp_path / "nowhere")
    elif which == "empty":
        raw_dir = str(tmp_path / "empty")
        os.makedirs(raw_dir)
    else:
        with open(gt, "w", encoding="utf-8") as f:
            f.write(GT_CSV.splitlines()[0] + "\n")
    with pytest.raises(SystemExit) as error:
        ablation.main([raw_dir, "--annotations", gt])
    assert error.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_runs_as_a_file_with_pythonpath(inputs):
    raw_dir, gt = inputs
    proc = subprocess.run(
        [sys.executable, SCRIPT, raw_dir, "--annotations", gt],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=REPO_ROOT),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Soft-IoU & EM-Merger" in proc.stdout


# ------------------------------------------------------------------------------------------- #
# On a real predict run: the raw files give predict's own EM-Merger numbers
# ------------------------------------------------------------------------------------------- #
def _predict_help() -> str:
    text = io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.suppress(SystemExit):
        predict.parse_args(["--help"])
    return text.getvalue()


needs_save_raw = pytest.mark.skipif(
    "--save-raw" not in _predict_help(), reason="predict.py has no --save-raw yet"
)
SMALL = ["--image-min-side", "128", "--image-max-side", "128"]


@pytest.mark.slow
@needs_save_raw
def test_ablation_of_a_predict_run_gives_its_em_merger_numbers(tiny_dataset, tmp_path, monkeypatch):
    from object_detector_retinanet.keras_retinanet.bin import train, train_iou

    monkeypatch.setenv("SKU110K_ROOT", str(tiny_dataset))
    outputs = ["--snapshot-path", str(tmp_path / "snap"), "--tensorboard-dir", str(tmp_path / "tb")]
    common = [*SMALL, "--verbose", "0", "--seed", "0", *outputs]
    train.main(["--no-weights", "--epochs", "1", "--steps", "1", *common, "csv"])
    (base,) = glob.glob(str(tmp_path / "snap" / "*" / "resnet50_csv_01.weights.h5"))
    train_iou.main(["--weights", base, "--epochs", "1", "--steps", "1", *common, "csv"])
    (model,) = glob.glob(str(tmp_path / "snap" / "*" / "iou_resnet50_csv_01.weights.h5"))
    # A low threshold: barely trained, the network scores every anchor near its prior, 0.01.
    results = predict.main(
        [
            *SMALL,
            "--score-threshold",
            "0.005",
            "--no-draw",
            "--results-dir",
            str(tmp_path / "results"),
            "--save-raw",
            str(tmp_path / "raw"),
            "csv",
            model,
            "--hard_score_rate=0.5",
        ]
    )
    gt = os.path.join(tiny_dataset, "annotations", "annotations_test.csv")
    expected = evaluate.main([results, "--annotations", gt])
    report = ablation.main([str(tmp_path / "raw"), "--annotations", gt])
    full = next(row for row in report["rows"] if row["setting"] == "Soft-IoU & EM-Merger")
    assert full["metrics"] == expected
