"""Both ways of running the CLIs: installed console scripts and the files."""

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(REPO, "object_detector_retinanet", "keras_retinanet", "bin")
SCRIPTS = {
    "sku110k-train": "train.py",
    "sku110k-train-iou": "train_iou.py",
    "sku110k-predict": "predict.py",
    "sku110k-evaluate": "evaluate.py",
    "sku110k-synth": "synth.py",
    "sku110k-ablation": "ablation.py",
    "sku110k-convert": "convert_model.py",
}


@pytest.mark.parametrize("console, filename", sorted(SCRIPTS.items()))
def test_script_file_and_console_script_show_the_same_help(console, filename):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    as_file = subprocess.run(
        [sys.executable, os.path.join(BIN, filename), "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert as_file.returncode == 0, as_file.stderr[-2000:]
    assert "usage:" in as_file.stdout
    executable = os.path.join(os.path.dirname(sys.executable), console)
    if not os.path.exists(executable):
        pytest.skip(f"{console} is not installed (pip install -e . installs it)")
    installed = subprocess.run(
        [executable, "--help"], env=env, capture_output=True, text=True, timeout=120
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    # Same parser: the same options (line wrapping differs with the program name's length).
    assert "usage:" in installed.stdout
    assert set(re.findall(r"--[\w-]+", installed.stdout)) == set(
        re.findall(r"--[\w-]+", as_file.stdout)
    )
