"""Data-parallel training: a MirroredStrategy step equals the single-device step.

The CPU is split into two logical devices in a fresh process (device configuration must happen
before TensorFlow initialises), so this runs without GPUs.
"""

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


@pytest.mark.slow
def test_mirrored_step_equals_single_device_step():
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "_mirrored_step.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    # Same batch (two identical images, one per replica): same loss, same SGD update. Before the
    # per-replica loss scaling, the mirrored loss and step were exactly twice the single ones.
    assert result["mirrored"] == pytest.approx(result["single"], rel=1e-5)
    assert result["max_step"] > 1e-6  # the step did move the weights ...
    assert result["max_weight_diff"] <= 1e-6 + 1e-3 * result["max_step"]  # ... identically
