"""Multi-worker training: two local ``train.py`` processes under ``TF_CONFIG``, on CPU.

Each worker is a fresh process (TensorFlow reads ``TF_CONFIG`` when the strategy starts), so the
test launches both, waits for both and checks what they left on disk: only the chief (worker 0)
writes a snapshot and TensorBoard logs, into one run folder, and the other worker leaves nothing.
"""

import glob
import json
import os
import re
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
TIMEOUT_S = 900  # two TensorFlow processes on a shared, loaded 2-core machine: be generous
TRAIN = "object_detector_retinanet.keras_retinanet.bin.train"


def _free_ports(count):
    """``count`` distinct ports that are free now (all bound at once, then released)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("localhost", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _tail(path, chars=4000):
    with open(path, errors="replace") as f:
        return f.read()[-chars:]


def _run_workers(argv, out, root, count=2):
    """Run ``count`` train.py workers of one cluster and wait for all of them.

    Output goes to files (a pipe could fill up and block a worker). When the time is up, every
    worker still running is killed with SIGKILL: a worker waiting for its peers ignores SIGTERM
    and SIGINT.

    Returns:
        ``(exit codes, log files, process ids, report)``; the report holds the tail of each log.
    """
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(count)]}
    scratch = out / "tmp"  # TMPDIR of the workers: a non-chief's scratch folder lands here
    scratch.mkdir()
    procs, logs = [], []
    for index in range(count):
        env = dict(
            os.environ,
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
            PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])),
            SKU110K_ROOT=str(root),
            TMPDIR=str(scratch),
            CUDA_VISIBLE_DEVICES="",
            TF_CPP_MIN_LOG_LEVEL="2",
            KERAS_BACKEND="tensorflow",
        )
        logs.append(out / f"worker{index}.log")
        with open(logs[-1], "w") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", TRAIN, *argv],
                    env=env,
                    cwd=str(out),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for proc in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    report = "\n".join(
        f"--- worker {i} (exit {p.returncode}) ---\n{_tail(log)}"
        for i, (p, log) in enumerate(zip(procs, logs))
    )
    return [proc.returncode for proc in procs], logs, [proc.pid for proc in procs], report


def _tf_config(task_type, index, chief=False):
    cluster = {"worker": ["host1:2222", "host2:2222"]}
    if chief:
        cluster["chief"] = ["host0:2222"]
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


def test_the_chief_is_worker_0_unless_the_cluster_names_one(monkeypatch):
    from object_detector_retinanet.keras_retinanet.training.distribute import is_chief

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert is_chief()  # a single process
    expected = {
        ("worker", 0, False): True,
        ("worker", 1, False): False,
        ("worker", 0, True): False,
        ("chief", 0, True): True,
    }
    for (task_type, index, chief), want in expected.items():
        monkeypatch.setenv("TF_CONFIG", _tf_config(task_type, index, chief))
        assert is_chief() is want, (task_type, index, chief)


def test_a_global_batch_smaller_than_the_cluster_fails_before_tensorflow(
    tiny_dataset, monkeypatch, capsys
):
    from object_detector_retinanet.keras_retinanet.bin import train

    monkeypatch.setenv("SKU110K_ROOT", str(tiny_dataset))
    monkeypatch.setenv("TF_CONFIG", _tf_config("worker", 1, chief=True))  # 3 workers
    with pytest.raises(SystemExit):
        train.parse_args(["--batch-size", "2", "csv"])
    assert "must be at least the number of workers in TF_CONFIG (3)" in capsys.readouterr().err
    assert train.parse_args(["--batch-size", "3", "csv"]).batch_size == 3
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(SystemExit):
        train.parse_args(["csv"])
    assert "TF_CONFIG is not valid JSON" in capsys.readouterr().err


@pytest.mark.slow
def test_two_workers_train_in_step_and_only_the_chief_writes(tiny_dataset, tmp_path):
    from object_detector_retinanet.keras_retinanet.models.retinanet import build_retinanet
    from object_detector_retinanet.keras_retinanet.models.weights import (
        load_weights_by_name,
        read_snapshot_attrs,
    )

    snap, tb = tmp_path / "snap", tmp_path / "tb"
    argv = [
        "--no-weights",
        "--epochs", "1",
        "--steps", "2",
        "--batch-size", "2",  # the global batch: one 128x128 image per worker and step
        "--image-min-side", "128",
        "--image-max-side", "128",
        "--snapshot-path", str(snap),
        "--tensorboard-dir", str(tb),
        "--verbose", "2",
        "csv",
    ]  # fmt: skip
    codes, logs, pids, report = _run_workers(argv, tmp_path, tiny_dataset)
    assert codes == [0, 0], report

    # One run folder, one snapshot, TensorBoard events from the chief's process only.
    snapshots = glob.glob(str(snap / "**" / "*.weights.h5"), recursive=True)
    assert len(snapshots) == 1, (snapshots, report)
    (stamp,) = os.listdir(snap)
    assert snapshots[0] == str(snap / stamp / "resnet50_csv_01.weights.h5")
    assert os.listdir(tb) == [stamp]
    events = glob.glob(str(tb / stamp / "**" / "events.out.tfevents.*"), recursive=True)
    assert events and {os.path.basename(e).split(".")[-3] for e in events} == {str(pids[0])}
    assert os.listdir(tmp_path / "tmp") == []  # worker 1 removed its scratch folder

    # Both workers logged the same loss: it is averaged across them after every step.
    losses = [re.findall(r" - loss: (\S+)", _tail(log, 10**6)) for log in logs]
    assert losses[0] and losses[0] == losses[1], report

    # The snapshot loads back, strictly by name, into a freshly built model.
    attrs = read_snapshot_attrs(snapshots[0])
    assert (attrs["sku110k_epoch"], attrs["sku110k_stage"]) == (1, "stage1")
    model = build_retinanet(1, freeze_bn=bool(attrs["sku110k_freeze_bn"]))
    loaded = load_weights_by_name(model, snapshots[0], skip_mismatch=False)
    assert loaded["loaded"] and not loaded["missing"]
    assert all(np.isfinite(w).all() for w in model.get_weights())
