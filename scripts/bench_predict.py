"""Benchmark: the prediction loop end to end against the bare forward pass of the same network.

Writes ``--images`` synthetic shelf photos (``utils.synthetic.write_dataset``, ``--source-scale``
times the network input ``--size``, resized to it as predict does) and builds a stage-2 ResNet50
RetinaNet with random weights (no trained model is needed: the timings do not depend on the
values), saved and loaded back through ``Predictor.from_weights`` as ``predict.py`` does. Then,
over ``--repeats`` rounds:

- ``bare forward``: the traced runner predict uses (``inference.make_runner``) on batches
  preprocessed beforehand: the network alone, outputs copied to NumPy;
- ``predict loop``: ``Predictor.predict_generator`` as ``predict.py`` calls it (CSV order, the
  merge of image i beside the network on image i + 1, results CSV, drawings unless
  ``--no-draw``);
- ``predict loop, sequential``: the same without the overlap, split per image into read (JPEG
  decode), prepare (caffe mean, resize, the raw rows: threshold, sort), network, merge (EM-Merger)
  and write (results CSV, drawing, loop).

A random-weight network scores every anchor about alike, so the merger's load depends on the
score threshold: unless ``--score-threshold`` is given, it is set from the first image so that
about ``--raw-detections`` anchors pass (default 2,000, the count ``scripts/bench_merger.py``
simulates for a SKU-110K photo: ~150 objects, ~9 boxes each, plus straddlers and noise). The
final classification kernel is drawn N(0, 2e-4) so that the scores differ from anchor to anchor,
and the box regression's is zero, so every box is its anchor;
which anchors pass is arbitrary, so the merger sees realistic counts, not realistic layouts.

Each figure is the median over rounds of the per-image mean; the first (traced) forward pass runs
before any timing. The table ends with the ratio end-to-end / bare forward.

Usage (from the repository root)::

    .venv/bin/python scripts/bench_predict.py                              # 800x1333, 4 images
    .venv/bin/python scripts/bench_predict.py --size 512x512 --images 2 --repeats 1   # smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time

import numpy as np

SCRIPTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(SCRIPTS_DIR)
for _path in (REPO_ROOT, SCRIPTS_DIR):  # run as a file without PYTHONPATH=.
    if _path not in sys.path:
        sys.path.insert(0, _path)

from bench_train import load_line, parse_size  # noqa: E402

from object_detector_retinanet.keras_retinanet.inference import Predictor  # noqa: E402

PHASES = ("read", "prepare", "network", "merge", "write")


@dataclasses.dataclass
class TimedPredictor(Predictor):
    """A :class:`Predictor` that adds up the seconds of its steps (sequential use only)."""

    seconds: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    counts: dict = dataclasses.field(default_factory=lambda: {"raw": [], "merged": []})

    def detect_raw(self, images, names=None, batch_size=None):
        start = time.perf_counter()
        raws = super().detect_raw(images, names, batch_size)
        self.seconds["prepare"] += time.perf_counter() - start  # network time moved out below
        self.counts["raw"].extend(len(raw.boxes) for raw in raws)
        return raws

    def merge(self, detections, shape):
        start = time.perf_counter()
        merged = super().merge(detections, shape)
        self.seconds["merge"] += time.perf_counter() - start
        self.counts["merged"].append(len(merged))
        return merged


class TimedReads:
    """A generator whose ``load_image`` is timed; everything else is the wrapped one's."""

    def __init__(self, generator, seconds: dict):
        self._generator = generator
        self._seconds = seconds

    def __getattr__(self, name):
        return getattr(self._generator, name)

    def load_image(self, index):
        start = time.perf_counter()
        image = self._generator.load_image(index)
        self._seconds["read"] += time.perf_counter() - start
        return image


def timed_runner(run_model, seconds: dict):
    def run(batch):
        start = time.perf_counter()
        outputs = run_model(batch)
        seconds["network"] += time.perf_counter() - start
        return outputs

    return run


def random_weights(path: str, seed: int) -> None:
    """A stage-2 (Soft-IoU) ResNet50 RetinaNet with random weights, its classification kernel
    N(0, 2e-4) (hard-score logits spread by ~1.5 around the prior) and its box regression
    zero (boxes = anchors), saved to ``path``."""
    import keras

    from object_detector_retinanet.keras_retinanet.models.retinanet import build_retinanet
    from object_detector_retinanet.keras_retinanet.models.soft_iou import add_iou_head

    keras.utils.set_random_seed(seed)
    model = add_iou_head(build_retinanet(num_classes=1), num_classes=1)
    kernel = model.get_layer("classification_submodel").get_layer("pyramid_classification").kernel
    rng = np.random.default_rng(seed)
    kernel.assign(rng.normal(0.0, 2e-4, kernel.shape).astype("float32"))
    # Zero box deltas: every box is its anchor (random deltas make many boxes degenerate).
    regression = model.get_layer("regression_submodel").get_layer("pyramid_regression").kernel
    regression.assign(np.zeros(regression.shape, dtype="float32"))
    model.save_weights(path)
    keras.backend.clear_session()


def calibrated_threshold(predictor: Predictor, batch: np.ndarray, target: int) -> float:
    """The hard-score threshold that lets about ``target`` anchors of ``batch`` through.

    ``predictor`` must run with a threshold below every score (it returns every anchor).
    """
    hard = np.sort(np.asarray(predictor.run_model(batch)[1])[0])[::-1]
    hard = hard[hard >= 0]  # padding rows are -1
    target = min(target, hard.size - 1)
    return float(hard[target - 1] + hard[target]) / 2


def network_batches(generator, predictor: Predictor) -> list:
    """The preprocessed, resized batches predict feeds the network, made beforehand."""
    from object_detector_retinanet.keras_retinanet.utils.image import (
        preprocess_image,
        resize_image,
    )

    batches = []
    for index in range(generator.size()):
        resized, _ = resize_image(
            preprocess_image(generator.load_image(index)),
            min_side=predictor.image_min_side,
            max_side=predictor.image_max_side,
        )
        batches.append(np.asarray(resized, dtype=np.float32)[None])
    return batches


def one_round(predictor: Predictor, generator, batches, out_dir: str, draw: bool) -> dict:
    """Seconds per image of the three variants, the split of the sequential loop, the counts."""
    result = {}
    start = time.perf_counter()
    for batch in batches:
        predictor.run_model(batch)
    result["bare forward"] = (time.perf_counter() - start) / len(batches)

    save_dir = os.path.join(out_dir, "drawings") if draw else None
    start = time.perf_counter()
    predictor.predict_generator(
        generator, os.path.join(out_dir, "overlap.csv"), save_dir, progress=False, overlap=True
    )
    result["predict loop"] = (time.perf_counter() - start) / len(batches)

    fields = {f.name: getattr(predictor, f.name) for f in dataclasses.fields(Predictor)}
    timed = TimedPredictor(**fields)
    timed.run_model = timed_runner(predictor.run_model, timed.seconds)
    reads = TimedReads(generator, timed.seconds)
    start = time.perf_counter()
    timed.predict_generator(
        reads, os.path.join(out_dir, "sequential.csv"), save_dir, progress=False, overlap=False
    )
    total = time.perf_counter() - start
    split = dict(timed.seconds)
    split["prepare"] -= split["network"]
    split["write"] = total - sum(split[p] for p in PHASES if p != "write")
    result["predict loop, sequential"] = total / len(batches)
    result["split"] = {phase: seconds / len(batches) for phase, seconds in split.items()}
    result["counts"] = timed.counts
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size", type=parse_size, default=(800, 1333), metavar="HxW", help="network input"
    )
    parser.add_argument("--images", type=int, default=4, help="synthetic photos (default 4)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (default 3)")
    parser.add_argument(
        "--source-scale", type=float, default=1.5, help="photo side / input side (default 1.5)"
    )
    parser.add_argument(
        "--raw-detections",
        type=int,
        default=2000,
        help="anchors per image the score threshold lets through (default %(default)s)",
    )
    parser.add_argument(
        "--score-threshold", type=float, default=None, help="a fixed threshold instead"
    )
    parser.add_argument("--no-draw", dest="draw", action="store_false", help="skip the drawings")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.images < 1 or args.repeats < 1 or args.raw_detections < 1:
        parser.error("need --images, --repeats and --raw-detections >= 1")

    from object_detector_retinanet.keras_retinanet.utils.runtime import tune_allocator

    tune_allocator()  # as predict.py, before TensorFlow allocates
    from object_detector_retinanet.keras_retinanet.inference import open_images
    from object_detector_retinanet.keras_retinanet.utils.synthetic import write_dataset

    height, width = args.size
    photo = [round(side * args.source_scale) for side in args.size]
    sides = {"image_min_side": min(args.size), "image_max_side": max(args.size)}
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as root:
        data = write_dataset(
            root, counts={"test": args.images}, height=photo[0], width=photo[1], seed=args.seed
        )
        split = data["splits"]["test"]
        generator = open_images(split["annotations"], data["class_mappings"], split["images_dir"])
        weights = os.path.join(root, "iou_resnet50_csv_01.weights.h5")
        random_weights(weights, args.seed)

        threshold = args.score_threshold
        if threshold is None:
            everything = Predictor.from_weights(weights, score_threshold=-1.0, **sides)
            batches = network_batches(generator, everything)
            threshold = calibrated_threshold(everything, batches[0], args.raw_detections)
            del everything
        predictor = Predictor.from_weights(weights, score_threshold=threshold, **sides)
        batches = network_batches(generator, predictor)
        start = time.perf_counter()
        predictor.run_model(batches[0])  # trace once, untimed
        traced = time.perf_counter() - start

        print(
            f"bench_predict: {os.cpu_count()} CPUs, {load_line()}; network input "
            f"{batches[0].shape[1]}x{batches[0].shape[2]} from {photo[0]}x{photo[1]} photos, "
            f"{args.images} images, {args.repeats} round(s), drawings "
            f"{'on' if args.draw else 'off'}; score threshold {threshold:.6g}; first (traced) "
            f"forward {traced:.1f} s",
            flush=True,
        )
        rounds = []
        for index in range(args.repeats):
            out_dir = os.path.join(root, f"round_{index}")
            os.makedirs(out_dir)
            rounds.append(one_round(predictor, generator, batches, out_dir, args.draw))

    variants = ("bare forward", "predict loop", "predict loop, sequential")
    medians = {v: statistics.median(r[v] for r in rounds) for v in variants}
    counts = rounds[0]["counts"]
    print(
        f"raw detections per image (median) {statistics.median(counts['raw']):.0f}, "
        f"merged {statistics.median(counts['merged']):.0f}\n"
    )
    print(f"{'variant':<26} {'s/image':>8} {'images/s':>9} {'vs bare':>8}  s/image per round")
    for variant in variants:
        seconds = medians[variant]
        print(
            f"{variant:<26} {seconds:>8.3f} {1 / seconds:>9.3f} "
            f"{seconds / medians['bare forward']:>8.2f}  "
            + " ".join(f"{r[variant]:.3f}" for r in rounds)
        )
    print("\nsequential loop, s/image (median of rounds):")
    for phase in PHASES:
        values = [r["split"][phase] for r in rounds]
        share = statistics.median(values) / medians["predict loop, sequential"]
        print(f"  {phase:<8} {statistics.median(values):>7.3f}  {100 * share:5.1f} %")
    print(
        f"\nend-to-end / bare forward: {medians['predict loop'] / medians['bare forward']:.2f} "
        f"(predict loop), {medians['predict loop, sequential'] / medians['bare forward']:.2f} "
        f"(sequential)\n{load_line()}"
    )


if __name__ == "__main__":
    main()
