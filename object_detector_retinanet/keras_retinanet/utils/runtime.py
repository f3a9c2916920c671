"""Process-level tuning that makes TensorFlow train at the speed of the hardware on CPUs.

Every training step allocates and frees hundreds of megabytes: activations and gradients inside
TensorFlow's kernels, and the batches the data pipeline hands over (a 256x256 image's targets
alone are ~0.3 MB, an 800x1333 one's ~5 MB). glibc's ``malloc`` serves blocks above its *mmap
threshold* (128 KiB at start, adjusted upwards at run time) with fresh ``mmap`` calls and gives
memory at the top of its heaps back to the kernel beyond the *trim threshold*. So each step the
kernel maps, zero-fills and unmaps the same buffers again: on a 2-core machine a third of the
training process's CPU time was kernel time (``perf``: ``clear_page_erms``, ``exc_page_fault``,
``unmap_page_range``) and ``model.fit`` ran 1.5x slower than the same model's bare
``tf.function`` step (``scripts/bench_train.py`` measures both).

:func:`tune_allocator` fixes both sources of that churn, inside the running process:

- it raises glibc's three thresholds with ``mallopt(3)``, so freed buffers up to 32 MiB are kept
  and reused (the same effect as starting Python with ``MALLOC_MMAP_THRESHOLD_=33554432
  MALLOC_TRIM_THRESHOLD_=... MALLOC_TOP_PAD_=...``, which users cannot be expected to do);
- it asks TensorFlow to pool its own host tensors (``TF_CPU_ALLOCATOR_USE_BFC=true``, the
  best-fit-with-coalescing allocator TensorFlow uses for GPU memory). glibc cannot keep blocks
  above 32 MiB out of ``mmap`` (its ceiling for the threshold on 64-bit), and at 800x1333 a
  ResNet50's early activations and their gradients are larger than that: with the thresholds
  alone a fifth of the step was still kernel time there, with the pool under 1 %. The variable is
  read when TensorFlow creates its CPU allocator (its first tensor), so this must run before.

The price is a resident set that stays at its peak instead of shrinking between steps, which is
how TensorFlow's GPU allocator behaves too; GPU memory is not affected. The command lines call it
first thing. Nothing is changed with ``SKU110K_MALLOC_TUNING=0``; the user's own ``MALLOC_*_`` or
``TF_CPU_ALLOCATOR_USE_BFC`` variables win over the respective setting; the ``mallopt`` part is a
no-op on non-glibc platforms (macOS, Windows, musl).

:func:`setup_devices` selects the GPUs a command line uses and lets TensorFlow grow its GPU memory
as needed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

#: ``mallopt`` parameter numbers from glibc's ``<malloc.h>``.
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

#: Blocks up to 32 MiB come from the heap (glibc's ceiling for the mmap threshold on 64-bit), so
#: a training step's buffers are reused instead of being mapped and zero-filled again.
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Never hand freed heap memory back to the kernel between steps (the largest ``int``).
TRIM_THRESHOLD = 2**31 - 1
#: Grow the heap in 256 MiB steps, so a step's first allocations do not each call ``brk``.
TOP_PAD = 256 * 1024 * 1024

OPT_OUT_VAR = "SKU110K_MALLOC_TUNING"
#: TensorFlow's switch for pooling host tensors (read once, when its CPU allocator is created).
TF_POOL_VAR = "TF_CPU_ALLOCATOR_USE_BFC"
_USER_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def _glibc():
    """The C library if it is glibc (has ``mallopt`` and ``gnu_get_libc_version``), else None."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not (hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version")):
        return None
    return libc


@functools.cache
def tune_allocator() -> bool:
    """Keep freed memory in the process instead of returning it to the kernel every step.

    Idempotent; call it before TensorFlow allocates (the command lines do it first thing).

    Returns:
        True when the glibc thresholds are (now or already) set, False when they were not (not
        glibc, opted out with ``SKU110K_MALLOC_TUNING=0``, or ``MALLOC_*_`` variables set by the
        user). TensorFlow's host pool is switched on unless opted out or set by the user.
    """
    if os.environ.get(OPT_OUT_VAR, "1") == "0":
        return False
    os.environ.setdefault(TF_POOL_VAR, "true")
    if any(var in os.environ for var in _USER_VARS):
        return False
    libc = _glibc()
    if libc is None:
        return False
    settings = (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (M_TOP_PAD, TOP_PAD),
    )
    return all(libc.mallopt(param, value) == 1 for param, value in settings)  # 1 = success


def setup_devices(gpu=None, multi_gpu=0) -> None:
    """Select GPUs (CUDA_VISIBLE_DEVICES) and enable memory growth (PORT).

    The original always set CUDA_VISIBLE_DEVICES, to "0" without --gpu; here it is set only when
    --gpu (or --multi-gpu without --gpu) asks, so data-parallel runs see every GPU.
    """
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    elif multi_gpu > 1 and "CUDA_VISIBLE_DEVICES" not in os.environ:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(multi_gpu))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    for device in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(device, True)
        except RuntimeError:  # already initialised (e.g. a second main() call in one process)
            pass
