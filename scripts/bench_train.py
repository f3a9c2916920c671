"""Benchmark stage-1 training throughput: the data pipeline alone, the training step, and fit.

For each ``--sizes HxW`` (network input height x width) the script writes synthetic shelf images
with ``utils.synthetic.write_dataset`` into a temporary folder, at ``--source-scale`` times the
input size (1.5: 768x768 photos for 512x512, 1200x2000 for 800x1333) with image_min_side /
image_max_side set so the generator resizes them to exactly HxW. It then reports:

1. Data pipeline: images/s of ``CSVGenerator`` with ``stage1_targets`` and the default horizontal
   flip (load, flip, resize, anchors, targets), wrapped by ``bin._common.fixed_steps`` as
   ``train.py`` does and iterated through Keras' own ``PyDatasetAdapter``: workers=1 indexes the
   dataset directly in the calling thread; workers=2 runs Keras' OrderedEnqueuer thread pool.
   Median over ``--repeats`` passes of ``--batches`` batches.
2. Training step: ResNet50-FPN RetinaNet (``build_retinanet(C, freeze_bn=False)``, Adam and the
   focal + smooth-L1 losses of ``train.py``, compiled as ``train.py`` does), batch
   ``--batch-size``, via ``train_on_batch`` on generator batches: the first (traced) step alone,
   then the median of ``--steps`` steps after ``--warmup`` untimed ones. Then ``model.fit`` on
   ``fixed_steps(generator, workers=1)`` (train.py's default) for ``--fit-steps`` steps plus a
   first one reported separately: the end-to-end s/step with the pipeline in the loop. Each size
   runs in a fresh subprocess, so peak RSS (``ru_maxrss``) and tracing do not mix.
3. Verdict: does the default (workers=1) pipeline deliver a batch faster than a step consumes it?
   With the TensorFlow backend, Keras wraps a workers=1 PyDataset in ``tf.data`` with prefetch, so
   loading runs beside the step; on a small CPU both compete for the same cores.

The machine may be shared: figures are medians; the load average is printed before and after.
Usage (from the repository root)::

    .venv/bin/python scripts/bench_train.py                     # 512x512 and 800x1333
    .venv/bin/python scripts/bench_train.py --quick             # smoke run, about 2 minutes
    .venv/bin/python scripts/bench_train.py --sizes 800x1333 --steps 10 --warmup 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:  # run as a file without PYTHONPATH=.
    sys.path.insert(0, REPO_ROOT)

DEFAULT_SIZES = ("512x512", "800x1333")
DEFAULTS = {
    "sizes": list(DEFAULT_SIZES),
    "steps": 5,
    "warmup": 1,
    "fit_steps": 5,
    "batches": 16,
    "repeats": 3,
    "images": 8,
}
QUICK = {
    "sizes": ["256x256", "320x512"],
    "steps": 2,
    "warmup": 1,
    "fit_steps": 2,
    "batches": 6,
    "repeats": 2,
    "images": 4,
}
RESULT_TAG = "BENCH_TRAIN_RESULT "  # the child's one JSON line on stdout


def parse_size(text: str) -> tuple[int, int]:
    """``"800x1333"`` -> (800, 1333): network input height x width."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 800x1333, got {text!r}") from None
    if min(height, width) < 32:
        raise argparse.ArgumentTypeError(f"size sides must be at least 32, got {text!r}")
    return height, width


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def generator_args(data_dir: str, size: tuple[int, int], batch_size: int, seed: int):
    """The ``args`` that ``_common.create_generators`` reads, as train.py's defaults set them
    (horizontal flip on, no --random-transform, no validation)."""
    return SimpleNamespace(
        random_transform=False,
        flip=True,
        seed=seed,
        classes=os.path.join(data_dir, "class_mappings.csv"),
        base_dir=os.path.join(data_dir, "images"),
        annotations=os.path.join(data_dir, "annotations", "annotations_train.csv"),
        val_annotations=None,
        batch_size=batch_size,
        image_min_side=min(size),
        image_max_side=max(size),
    )


def write_data(root: str, size: tuple[int, int], images: int, source_scale: float) -> dict:
    """Synthetic photos of the input's aspect ratio, ``source_scale`` times larger."""
    from object_detector_retinanet.keras_retinanet.utils.synthetic import write_dataset

    height, width = (round(side * source_scale) for side in size)
    out_dir = os.path.join(root, f"{size[0]}x{size[1]}")
    summary = write_dataset(out_dir, counts={"train": images}, height=height, width=width, seed=0)
    boxes = summary["splits"]["train"]["boxes"]
    return {"dir": out_dir, "source": (height, width), "boxes_per_image": boxes / max(images, 1)}


# --------------------------------------------------------------------------------------------- #
# 1. Data pipeline alone
# --------------------------------------------------------------------------------------------- #
def time_pipeline(data_dir, size, batch_size, workers, batches, repeats):
    """Median images/s of ``fixed_steps(generator)`` iterated by Keras' PyDatasetAdapter."""
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    from object_detector_retinanet.keras_retinanet.bin import train as train_script
    from object_detector_retinanet.keras_retinanet.bin._common import (
        create_generators,
        fixed_steps,
    )

    generator, _ = create_generators(
        generator_args(data_dir, size, batch_size, seed=0), train_script.targets_fn
    )
    shape = tuple(generator[0][0].shape)  # also warms the anchor cache and the file cache
    rates = []
    for repeat in range(repeats):
        dataset = fixed_steps(generator, batches, seed=0, initial_epoch=repeat, workers=workers)
        adapter = PyDatasetAdapter(dataset, shuffle=False)
        start = time.perf_counter()
        stamps = []
        for _ in adapter.get_numpy_iterator():  # ends the enqueuer itself after the last batch
            stamps.append(time.perf_counter())
        if len(stamps) != batches:
            raise RuntimeError(f"expected {batches} batches, got {len(stamps)}")
        rates.append(batches * batch_size / (stamps[-1] - start))
    return {"input_shape": shape, "images_per_s": statistics.median(rates), "runs": rates}


# --------------------------------------------------------------------------------------------- #
# 2. Training step (child process, one size)
# --------------------------------------------------------------------------------------------- #
def train_child(args) -> dict:
    """Build, compile and time one size; returns the figures (printed as one JSON line)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    from object_detector_retinanet.keras_retinanet import config
    from object_detector_retinanet.keras_retinanet.bin import train as train_script
    from object_detector_retinanet.keras_retinanet.bin._common import (
        create_generators,
        fixed_steps,
        make_optimizer,
    )
    from object_detector_retinanet.keras_retinanet.models.retinanet import build_retinanet

    size = args.sizes[0]
    keras.utils.set_random_seed(0)
    generator, _ = create_generators(
        generator_args(args._child_data, size, args.batch_size, seed=0), train_script.targets_fn
    )
    prepared = fixed_steps(generator, 2, seed=0)
    batches = [prepared[i] for i in range(len(prepared))]  # exactly what fit would receive

    start = time.perf_counter()
    model = build_retinanet(generator.num_classes(), freeze_bn=False)
    model.compile(  # as _common.train: Adam(lr, clipnorm), the stage-1 losses, no XLA
        optimizer=make_optimizer(config.TrainConfig.learning_rate, config.TrainConfig.clipnorm),
        loss=train_script.losses(),
        jit_compile=False,
    )
    build_s = time.perf_counter() - start
    rss_built = peak_rss_mib()

    def step(i):
        inputs, targets = batches[i % len(batches)]
        begin = time.perf_counter()
        loss = model.train_on_batch(inputs, targets)  # returns Python floats: synchronised
        elapsed = time.perf_counter() - begin
        if not np.all(np.isfinite(loss)):
            raise RuntimeError(f"non-finite loss {loss} at step {i}")
        return elapsed

    first_s = step(0)
    for i in range(args.warmup):
        step(1 + i)
    times = [step(1 + args.warmup + i) for i in range(args.steps)]
    rss_steps = peak_rss_mib()

    class StepClock(keras.callbacks.Callback):
        """Wall time between consecutive batch ends: step plus any wait for data."""

        def __init__(self):
            super().__init__()
            self.begin = None
            self.ends = []

        def on_train_batch_begin(self, batch, logs=None):
            if self.begin is None:
                self.begin = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            float((logs or {}).get("loss", 0.0))  # make sure the step has finished
            self.ends.append(time.perf_counter())

    fit_steps = args.fit_steps + 1  # the first fit step (re-)traces: reported separately
    clock = StepClock()
    fit_start = time.perf_counter()
    model.fit(
        fixed_steps(generator, fit_steps, seed=1, workers=1),  # train.py's default workers
        steps_per_epoch=fit_steps,
        epochs=1,
        verbose=0,
        callbacks=[clock],
    )
    fit_intervals = np.diff(clock.ends).tolist()
    return {
        "size": list(size),
        "input_shape": list(batches[0][0].shape),
        "build_s": build_s,
        "first_step_s": first_s,
        "step_s": statistics.median(times),
        "step_runs": times,
        "fit_first_s": clock.ends[0] - fit_start,
        "fit_step_s": statistics.median(fit_intervals) if fit_intervals else float("nan"),
        "fit_runs": fit_intervals,
        "rss_built_mib": rss_built,
        "rss_steps_mib": rss_steps,
        "rss_peak_mib": peak_rss_mib(),
    }


def run_child(args, size, data_dir) -> dict:
    """Run :func:`train_child` for one size in a fresh interpreter and parse its result."""
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--sizes",
        f"{size[0]}x{size[1]}",
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--fit-steps",
        str(args.fit_steps),
        "--batch-size",
        str(args.batch_size),
        "--_child-data",
        data_dir,
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG) :])
    raise RuntimeError(
        f"training benchmark for {size[0]}x{size[1]} failed (exit {proc.returncode}); "
        f"output tail:\n{proc.stdout[-1000:]}\n{proc.stderr[-3000:]}"
    )


# --------------------------------------------------------------------------------------------- #
# Reporting
# --------------------------------------------------------------------------------------------- #
def fmt_shape(shape) -> str:
    return "x".join(str(s) for s in shape[1:3]) if len(shape) == 4 else "x".join(map(str, shape))


def load_line() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def verdict(size, pipe, train, batch_size) -> str:
    """One sentence: does workers=1 loading keep up with a step, and what fit actually shows."""
    load_s = batch_size / pipe[1]["images_per_s"]
    step_s, fit_s = train["step_s"], train["fit_step_s"]
    keeps_up = load_s < step_s
    text = (
        f"{size[0]}x{size[1]}: {'YES' if keeps_up else 'NO'} - workers=1 loads a batch in "
        f"{load_s:.2f} s vs {step_s:.2f} s per step ({100 * load_s / step_s:.1f}% of a step)"
    )
    if 2 in pipe:
        text += f"; workers=2 would load one every {batch_size / pipe[2]['images_per_s']:.2f} s"
    text += (
        f". fit with workers=1 (tf.data prefetch beside the step): {fit_s:.2f} s/step, "
        f"{100 * (fit_s / step_s - 1):+.0f}% vs the bare step, of which loading on the same "
        f"cores could explain at most {100 * min(load_s, step_s) / step_s:.1f}%"
    )
    if not keeps_up:
        text += " (the step waits for data: raise --workers)"
    return text + "."


def main(argv=None) -> None:
    from object_detector_retinanet.keras_retinanet import config

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes",
        nargs="+",
        default=None,
        metavar="HxW",
        help=f"network input sizes (default: {' '.join(DEFAULT_SIZES)})",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed train_on_batch steps per size, median (default 5)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed steps after the first traced one (default 1)",
    )
    parser.add_argument(
        "--fit-steps",
        type=int,
        default=None,
        help="timed model.fit steps after fit's first one (default 5)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=config.TrainConfig.batch_size,
        help="images per batch (default %(default)s, train.py's)",
    )
    parser.add_argument(
        "--batches", type=int, default=None, help="batches per pipeline pass (default 16)"
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="pipeline passes per setting, median (default 3)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1, 2],
        help="pipeline worker counts to time (default 1 2)",
    )
    parser.add_argument(
        "--images", type=int, default=None, help="synthetic images written per size (default 8)"
    )
    parser.add_argument(
        "--source-scale",
        type=float,
        default=1.5,
        help="source photo side / input side (default %(default)s)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 256x256 and 320x512, 2 steps, short pipeline passes",
    )
    parser.add_argument(
        "--no-train", dest="train", action="store_false", help="time the data pipeline only"
    )
    parser.add_argument("--_child-data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    try:
        args.sizes = [parse_size(text) for text in args.sizes]
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    for name in ("steps", "fit_steps", "batches", "repeats", "images", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or args.source_scale <= 0 or min(args.workers) < 1:
        parser.error("--warmup must be >= 0, --source-scale > 0 and --workers >= 1")

    if args._child_data:  # internal: one size in a fresh process
        print(RESULT_TAG + json.dumps(train_child(args)), flush=True)
        return

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    print(
        f"bench_train: {os.cpu_count()} CPUs, {load_line()}; batch {args.batch_size}, "
        f"steps {args.steps} (+{args.warmup} warm-up), fit steps {args.fit_steps}, "
        f"pipeline {args.repeats} x {args.batches} batches",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench_train_") as root:
        data = {size: write_data(root, size, args.images, args.source_scale) for size in args.sizes}

        print(
            "\n1. Data pipeline (CSVGenerator + stage1_targets + flip, fixed_steps, "
            "Keras PyDatasetAdapter), median of passes",
            flush=True,
        )
        print(
            f"{'input':>10} {'source':>10} {'boxes/img':>9} {'workers':>7} {'images/s':>9} "
            f"{'ms/image':>9}  runs (images/s)"
        )
        pipe = {}
        for size in args.sizes:
            pipe[size] = {}
            for workers in args.workers:
                result = time_pipeline(
                    data[size]["dir"], size, args.batch_size, workers, args.batches, args.repeats
                )
                pipe[size][workers] = result
                rate = result["images_per_s"]
                print(
                    f"{fmt_shape(result['input_shape']):>10} "
                    f"{fmt_shape(data[size]['source']):>10} "
                    f"{data[size]['boxes_per_image']:>9.0f} {workers:>7} {rate:>9.2f} "
                    f"{1e3 / rate:>9.0f}  " + " ".join(f"{r:.2f}" for r in result["runs"]),
                    flush=True,
                )

        if not args.train:
            return
        print(
            "\n2. Training step, ResNet50-FPN RetinaNet stage 1 (freeze_bn=False, Adam, "
            "focal + smooth L1), one fresh process per size",
            flush=True,
        )
        print(
            f"{'input':>10} {'build s':>8} {'1st step s':>10} {'s/step':>7} {'img/s':>6} "
            f"{'fit 1st s':>9} {'fit s/step':>10} {'peak RSS MiB':>12}  step runs (s)"
        )
        train = {}
        for size in args.sizes:
            result = run_child(args, size, data[size]["dir"])
            train[size] = result
            print(
                f"{fmt_shape(result['input_shape']):>10} {result['build_s']:>8.1f} "
                f"{result['first_step_s']:>10.1f} {result['step_s']:>7.2f} "
                f"{args.batch_size / result['step_s']:>6.2f} {result['fit_first_s']:>9.1f} "
                f"{result['fit_step_s']:>10.2f} {result['rss_peak_mib']:>12.0f}  "
                + " ".join(f"{t:.2f}" for t in result["step_runs"])
                + "  | fit: "
                + " ".join(f"{t:.2f}" for t in result["fit_runs"]),
                flush=True,
            )

        if 1 in args.workers:
            print("\n3. Verdict (default workers=1)")
            for size in args.sizes:
                print(verdict(size, pipe[size], train[size], args.batch_size))
    print(f"\n{load_line()}")


if __name__ == "__main__":
    main()
