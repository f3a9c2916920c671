"""Benchmark: train.py's own training step against a minimal ``tf.function`` step of the same model.

For each ``--sizes HxW`` (network input height x width) the script writes synthetic shelf photos
(``utils.synthetic.write_dataset``, ``--source-scale`` times the input size) and then times, each
in a fresh process, alternating over ``--repeats`` rounds so that machine noise hits all alike:

- ``train.py``: the command line's own path, ``training.train`` with train.py's arguments
  (``--no-weights``, the default flip, TensorBoard logs, a snapshot at the end, the data pipeline
  and every callback), timed by an extra callback between consecutive batch ends;
- ``train.py, untuned``: the same with the allocator tuning (glibc thresholds and TensorFlow's
  host pool) switched off (``SKU110K_MALLOC_TUNING=0``; see ``utils/runtime.py``), to show what
  it buys;
- ``minimal``: the same model (``build_retinanet(C, freeze_bn=False)``), the same Adam settings
  and losses, one ``tf.function`` doing forward, gradients and update on batches the generator
  made beforehand, in a process with the same allocator settings as the command lines: the floor
  a training loop can reach on this machine.

Each process skips its first (traced) step and ``--warmup`` more, then reports the median seconds
per step over ``--steps`` steps and the share of its CPU time spent in the kernel (system time /
(user + system), from ``getrusage`` over the timed steps). The table gives the median over rounds
and the ratio to the minimal step.

Usage (from the repository root)::

    .venv/bin/python scripts/bench_train.py                      # 256x256 and 800x1333
    .venv/bin/python scripts/bench_train.py --quick              # smoke run, a few minutes
    .venv/bin/python scripts/bench_train.py --sizes 256x256 --repeats 5 --steps 20
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

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:  # run as a file without PYTHONPATH=.
    sys.path.insert(0, REPO_ROOT)

VARIANTS = ("train.py", "train.py, untuned", "minimal")
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


def cpu_times() -> tuple[float, float]:
    """(user, system) CPU seconds of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def summarise(ends: list[float], cpu: list[tuple[float, float]], skip: int) -> dict:
    """Median step time and system share over the steps after the first ``skip`` ones."""
    intervals = [b - a for a, b in zip(ends[skip:], ends[skip + 1 :])]
    user = cpu[-1][0] - cpu[skip][0]
    system = cpu[-1][1] - cpu[skip][1]
    return {
        "step_s": statistics.median(intervals),
        "steps": intervals,
        "system_share": system / max(user + system, 1e-9),
        "first_step_s": ends[0],
    }


def data_flags(data_dir: str, size: tuple[int, int]) -> list[str]:
    """train.py arguments that read the synthetic set and resize it to exactly ``size``."""
    return [
        "--image-min-side",
        str(min(size)),
        "--image-max-side",
        str(max(size)),
        "csv",
        "--annotations",
        os.path.join(data_dir, "annotations", "annotations_train.csv"),
        "--classes",
        os.path.join(data_dir, "class_mappings.csv"),
        "--base_dir",
        os.path.join(data_dir, "images"),
        "--val-annotations",
        "",
    ]


def child_train_py(size, data_dir, total_steps, out_dir) -> tuple[list, list]:
    """Run train.py's path for ``total_steps`` steps; batch-end times and CPU times."""
    import keras

    from object_detector_retinanet.keras_retinanet.bin import train as train_script
    from object_detector_retinanet.keras_retinanet.training import STAGE1, train

    class Clock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.start, self.ends, self.cpu = None, [], []

        def on_train_batch_begin(self, batch, logs=None):
            if self.start is None:
                self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter() - self.start)
            self.cpu.append(cpu_times())

    argv = ["--no-weights", "--epochs", "1", "--steps", str(total_steps), "--seed", "0"]
    argv += ["--verbose", "0", "--snapshot-path", out_dir, "--tensorboard-dir", out_dir]
    clock = Clock()
    train(
        STAGE1,
        train_script.parse_args(argv + data_flags(data_dir, size)),
        extra_callbacks=[clock],
    )
    return clock.ends, clock.cpu


def child_minimal(size, data_dir, total_steps) -> tuple[list, list]:
    """Forward, gradients and Adam update in one ``tf.function`` on pre-made batches."""
    from object_detector_retinanet.keras_retinanet.utils.runtime import tune_allocator

    tune_allocator()  # the same process settings as the command lines: compare the loops alone
    import keras
    import tensorflow as tf

    from object_detector_retinanet.keras_retinanet import config
    from object_detector_retinanet.keras_retinanet.bin import train as train_script
    from object_detector_retinanet.keras_retinanet.models.retinanet import build_retinanet
    from object_detector_retinanet.keras_retinanet.training import (
        STAGE1,
        create_generators,
        fixed_steps,
        make_optimizer,
    )

    args = train_script.parse_args(["--no-weights", "--seed", "0"] + data_flags(data_dir, size))
    generator, _ = create_generators(args, STAGE1.targets_fn)
    prepared = fixed_steps(generator, min(total_steps, 8), seed=0)
    batches = [prepared[i] for i in range(len(prepared))]
    keras.utils.set_random_seed(0)
    model = build_retinanet(generator.num_classes(), freeze_bn=False)
    optimizer = make_optimizer(args.lr, args.clipnorm)
    losses = STAGE1.losses()

    @tf.function
    def step(inputs, targets):
        with tf.GradientTape() as tape:
            outputs = model(inputs, training=True)
            loss = sum(losses[name](targets[name], out) for name, out in zip(losses, outputs))
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return loss

    assert list(losses) == [config.REGRESSION, config.CLASSIFICATION]  # the output order
    optimizer.build(model.trainable_variables)
    start, ends, cpu = time.perf_counter(), [], []
    for i in range(total_steps):
        inputs, targets = batches[i % len(batches)]
        float(step(inputs, targets))  # waits for the step
        ends.append(time.perf_counter() - start)
        cpu.append(cpu_times())
    return ends, cpu


def run_child(variant, size, data_dir, args) -> dict:
    """One variant at one size in a fresh interpreter; returns its summary."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if variant == "train.py, untuned":
        env["SKU110K_MALLOC_TUNING"] = "0"
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--_child",
        variant,
        "--sizes",
        f"{size[0]}x{size[1]}",
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--_data",
        data_dir,
    ]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG) :])
    raise RuntimeError(
        f"{variant} at {size} failed (exit {proc.returncode}):\n"
        f"{proc.stdout[-1000:]}\n{proc.stderr[-3000:]}"
    )


def child_main(args) -> None:
    total = 1 + args.warmup + args.steps + 1  # +1: intervals need a step before the first
    size = args.sizes[0]
    if args._child == "minimal":
        ends, cpu = child_minimal(size, args._data, total)
    else:
        with tempfile.TemporaryDirectory(prefix="bench_train_run_") as out_dir:
            ends, cpu = child_train_py(size, args._data, total, out_dir)
    print(RESULT_TAG + json.dumps(summarise(ends, cpu, skip=1 + args.warmup)), flush=True)


def load_line() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes",
        nargs="+",
        default=["256x256", "800x1333"],
        metavar="HxW",
        help="network input sizes (default: %(default)s)",
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps per process (default 12; --quick 4)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="untimed steps after the first, traced one (default %(default)s)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="rounds over the variants; medians over rounds (default 3; --quick 1)",
    )
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--images", type=int, default=8, help="synthetic photos per size")
    parser.add_argument(
        "--source-scale",
        type=float,
        default=1.5,
        help="photo side / input side (default %(default)s)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 steps, one round")
    parser.add_argument("--_child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--_data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.steps = args.steps or (4 if args.quick else 12)
    args.repeats = args.repeats or (1 if args.quick else 3)
    try:
        args.sizes = [parse_size(text) for text in args.sizes]
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    if args.steps < 2 or args.warmup < 0 or args.repeats < 1 or args.images < 1:
        parser.error("need --steps >= 2, --warmup >= 0, --repeats >= 1, --images >= 1")
    if args._child:
        child_main(args)
        return

    from object_detector_retinanet.keras_retinanet.utils.synthetic import write_dataset

    print(
        f"bench_train: {os.cpu_count()} CPUs, {load_line()}; batch 1, {args.steps} timed steps "
        f"after {1 + args.warmup}, {args.repeats} round(s)",
        flush=True,
    )
    print(
        f"\n{'input':>9} {'variant':<18} {'s/step':>7} {'vs minimal':>10} {'system':>7} "
        f"{'1st step s':>10}  s/step per round",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench_train_") as root:
        for size in args.sizes:
            data_dir = os.path.join(root, f"{size[0]}x{size[1]}")
            photo = [round(side * args.source_scale) for side in size]
            write_dataset(
                data_dir, counts={"train": args.images}, height=photo[0], width=photo[1], seed=0
            )
            runs = {variant: [] for variant in args.variants}
            for _ in range(args.repeats):
                for variant in args.variants:
                    runs[variant].append(run_child(variant, size, data_dir, args))
            medians = {v: statistics.median(r["step_s"] for r in rs) for v, rs in runs.items()}
            for variant, results in runs.items():
                ratio = medians[variant] / medians["minimal"] if "minimal" in medians else None
                print(
                    f"{size[0]:>4}x{size[1]:<4} {variant:<18} {medians[variant]:>7.3f} "
                    + (f"{ratio:>10.2f} " if ratio else f"{'-':>10} ")
                    + f"{100 * statistics.median(r['system_share'] for r in results):>6.1f}% "
                    f"{statistics.median(r['first_step_s'] for r in results):>10.1f}  "
                    + " ".join(f"{r['step_s']:.3f}" for r in results),
                    flush=True,
                )
    print(f"\n{load_line()}")


if __name__ == "__main__":
    main()
