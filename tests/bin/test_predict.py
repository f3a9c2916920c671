"""predict's bad-input path: one ``error: <file> line N: <problem>`` line and exit status 2."""

import shutil

import pytest

from object_detector_retinanet.keras_retinanet.bin import predict
from object_detector_retinanet.keras_retinanet.errors import INPUT_ERROR_STATUS, MissingInput
from object_detector_retinanet.keras_retinanet.inference import Predictor


@pytest.fixture
def weights(tmp_path):
    path = tmp_path / "w.weights.h5"
    path.write_bytes(b"")  # never opened when the input fails first
    return path


def test_malformed_annotation_row_exits_2_with_one_line(tiny_dataset, tmp_path, weights, capsys):
    annotations = tmp_path / "bad.csv"
    shutil.copy(tiny_dataset / "annotations" / "annotations_test.csv", annotations)
    lines = annotations.read_text().count("\n")
    with open(annotations, "a") as f:
        f.write("test_0.jpg,1,2,abc,4,object,128,128\n")
    argv = ["--base_dir", str(tiny_dataset / "images"), "--no-draw", "csv"]
    argv += [
        "--annotations",
        str(annotations),
        "--classes",
        str(tiny_dataset / "class_mappings.csv"),
    ]
    with pytest.raises(SystemExit) as exit_info:
        predict.main([*argv, str(weights)])
    assert exit_info.value.code == INPUT_ERROR_STATUS
    err = capsys.readouterr().err
    assert err.strip() == f"error: bad.csv line {lines + 1}: malformed x2: 'abc'"
    assert "Traceback" not in err


def test_unreadable_weights_file_exits_2(tiny_dataset, weights, capsys, monkeypatch):
    monkeypatch.setenv("SKU110K_ROOT", str(tiny_dataset))
    with pytest.raises(SystemExit) as exit_info:
        predict.main(["--no-draw", "--results-dir", str(weights.parent), "csv", str(weights)])
    assert exit_info.value.code == INPUT_ERROR_STATUS
    assert capsys.readouterr().err.startswith(f"error: {weights}: not a readable weights file")


def test_from_weights_names_a_missing_file(tmp_path):
    with pytest.raises(MissingInput, match="no such weights file"):
        Predictor.from_weights(tmp_path / "gone.weights.h5")
