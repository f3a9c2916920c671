"""tune_allocator: large buffers come from the reused heap instead of fresh mmap calls, and
TensorFlow pools its host tensors."""

import os
import subprocess
import sys

import pytest

from object_detector_retinanet.keras_retinanet.utils import runtime

needs_glibc = pytest.mark.skipif(runtime._glibc() is None, reason="mallopt is glibc-only")

# Allocates a 16 MiB NumPy buffer and prints how many mmapped blocks that added (mallinfo2).
_PROBE = """
import ctypes, os, sys
import numpy as np
from object_detector_retinanet.keras_retinanet.utils.runtime import tune_allocator

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
print(tune_allocator())
before = libc.mallinfo2().hblks
buffer = np.ones(16 * 2**20, dtype=np.uint8)
print(libc.mallinfo2().hblks - before)
print(os.environ.get("TF_CPU_ALLOCATOR_USE_BFC", "unset"))
"""


def _probe(env_extra):
    """(thresholds tuned?, mmapped blocks a 16 MiB buffer added, TF_CPU_ALLOCATOR_USE_BFC after)"""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MALLOC_") and k not in (runtime.TF_POOL_VAR, runtime.OPT_OUT_VAR)
    }
    env.update(env_extra)
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, check=True
    ).stdout.split()
    return out[0] == "True", int(out[1]), out[2]


@needs_glibc
def test_tuned_process_serves_a_16_mib_buffer_from_the_heap():
    # glibc's default mmap threshold is 128 KiB: 16 MiB gets a block of its own (1 more mmapped
    # block); after tune_allocator the threshold is 32 MiB, so it comes from the heap (0 more).
    assert _probe({}) == (True, 0, "true")
    assert _probe({runtime.OPT_OUT_VAR: "0"}) == (False, 1, "unset")


@needs_glibc
def test_user_settings_win():
    tuned, _, pool = _probe({"MALLOC_TRIM_THRESHOLD_": "131072"})
    assert (tuned, pool) == (False, "true")  # their malloc choice; TensorFlow still pools
    assert _probe({runtime.TF_POOL_VAR: "false"})[2] == "false"


def test_not_glibc_changes_no_thresholds(monkeypatch):
    monkeypatch.setattr(runtime, "_glibc", lambda: None)
    monkeypatch.delenv(runtime.TF_POOL_VAR, raising=False)
    runtime.tune_allocator.cache_clear()
    try:
        assert runtime.tune_allocator() is False
        assert os.environ[runtime.TF_POOL_VAR] == "true"  # TensorFlow's pool works everywhere
    finally:
        runtime.tune_allocator.cache_clear()
