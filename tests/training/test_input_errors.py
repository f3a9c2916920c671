"""Bad input to the training command lines: ``error: <message>`` on stderr, exit status 2.

The argument checks only see whether files exist; what needs a weights file's contents is checked
when the driver opens it, and raises InputError like the CSV readers do.
"""

import argparse
import os
import subprocess
import sys

import h5py
import keras
import pytest

from object_detector_retinanet.keras_retinanet.bin import train, train_iou
from object_detector_retinanet.keras_retinanet.errors import InputError
from object_detector_retinanet.keras_retinanet.models.weights import write_snapshot_attrs
from object_detector_retinanet.keras_retinanet.training import driver

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
TRAIN = "object_detector_retinanet.keras_retinanet.bin.train"


@pytest.fixture
def root(tiny_dataset, monkeypatch):
    monkeypatch.setenv("SKU110K_ROOT", str(tiny_dataset))
    return tiny_dataset


def _env():
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])),
        TF_CPP_MIN_LOG_LEVEL="2",
        KERAS_BACKEND="tensorflow",
    )


def test_parsing_the_training_flags_imports_no_tensorflow():
    code = (
        "import sys\n"
        f"import {TRAIN}, {TRAIN}_iou\n"
        "import object_detector_retinanet.keras_retinanet.training.stages\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'h5py'}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_argument_checks_open_no_weights_file(root, tmp_path, monkeypatch):
    def no_hdf5(*args, **kwargs):
        raise AssertionError("the argument checks opened a weights file")

    monkeypatch.setattr(h5py, "File", no_hdf5)
    not_hdf5 = tmp_path / "resnet50_csv_03.weights.h5"
    not_hdf5.write_bytes(b"not an HDF5 file")
    args = train.parse_args(["--snapshot", str(not_hdf5), "csv"])
    assert args.snapshot == str(not_hdf5)
    assert args.freeze_bn is None  # --freeze-bn auto: the snapshot's own mode, read by the driver
    explicit = train.parse_args(["--snapshot", str(not_hdf5), "--freeze-bn", "no", "csv"])
    assert explicit.freeze_bn is False
    assert train_iou.parse_args(["--weights", str(not_hdf5), "csv"]).weights == str(not_hdf5)


def _resume_args(snapshot, freeze_bn_after=None):
    return argparse.Namespace(
        snapshot=str(snapshot), freeze_bn=None, freeze_bn_after=freeze_bn_after
    )


def test_the_driver_takes_the_batchnorm_mode_of_the_snapshot(tmp_path):
    learning, frozen, foreign = (tmp_path / f"{n}.weights.h5" for n in ("a", "b", "c"))
    write_snapshot_attrs(learning, sku110k_freeze_bn=0)
    write_snapshot_attrs(frozen, sku110k_freeze_bn=1)
    write_snapshot_attrs(foreign)  # no metadata: a pretrained file, BatchNorm frozen
    args = _resume_args(learning, freeze_bn_after=1)
    assert driver.read_resume_attrs(args) == {"sku110k_freeze_bn": 0} and args.freeze_bn is False
    args = _resume_args(foreign)
    assert driver.read_resume_attrs(args) == {} and args.freeze_bn is True
    with pytest.raises(InputError, match="--freeze-bn-after needs BatchNorm learning"):
        driver.read_resume_attrs(_resume_args(frozen, freeze_bn_after=1))


def test_an_unreadable_snapshot_is_an_input_error(tmp_path):
    broken = tmp_path / "resnet50_csv_03.weights.h5"
    broken.write_bytes(b"not an HDF5 file")
    with pytest.raises(InputError, match="not a readable weights file"):
        driver.read_resume_attrs(_resume_args(broken))


def test_an_unusable_weights_file_is_an_input_error(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="dense")])
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"")
    with pytest.raises(InputError, match="not a readable weights file"):
        driver.load_initial_weights(model, str(broken))
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["data"] = [1, 2, 3]
    with pytest.raises(InputError, match="not a Keras weights file"):
        driver.load_initial_weights(model, str(foreign))


def test_cli_reports_an_unreadable_snapshot_without_a_traceback(root, tmp_path):
    broken = tmp_path / "resnet50_csv_03.weights.h5"
    broken.write_bytes(b"not an HDF5 file")
    out = subprocess.run(
        [sys.executable, "-m", TRAIN, "--snapshot", str(broken), "csv"],
        env=dict(_env(), SKU110K_ROOT=str(root)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.startswith(f"error: --snapshot {broken}: not a readable weights file")
    assert "Traceback" not in out.stderr


def test_cli_reports_a_bad_annotation_row_with_its_line(root, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    lines = (root / "annotations" / "annotations_train.csv").read_text().splitlines()
    name = lines[0].split(",")[0]
    bad.write_text("\n".join([lines[0], f"{name},50,10,40,30,object,128,128", *lines[1:]]) + "\n")
    argv = ["--no-weights", "--snapshot-path", str(tmp_path), "--tensorboard-dir", ""]
    with pytest.raises(SystemExit) as exit_info:
        train.main([*argv, "csv", "--annotations", str(bad)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: bad.csv line 2: ") and "x2 (40)" in err
    assert "Traceback" not in err
