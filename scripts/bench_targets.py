"""Benchmark the NumPy training targets (utils/anchors.py) on dense-shelf layouts.

Prints the median milliseconds per image of ``stage1_targets`` and ``stage2_targets`` (§6) and
of ``anchors_for_shape`` (§5.3), for SKU-110K-like images: a grid of touching products with a few
pixels of jitter, about 150 boxes at 800x1066. Not a test; run it pinned to one core:

    PYTHONPATH=. taskset -c 0 .venv/bin/python scripts/bench_targets.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from object_detector_retinanet.keras_retinanet.utils import anchors as anchors_mod
from object_detector_retinanet.keras_retinanet.utils.anchors import (
    anchors_for_shape,
    stage1_targets,
    stage2_targets,
)
from object_detector_retinanet.keras_retinanet.utils.boxes import non_max_suppression

CASES = (  # (height, width, rows, columns) -> rows * columns GT boxes
    (800, 1066, 10, 15),  # the brief's case: 150 boxes
    (800, 1333, 14, 22),  # max-side input, 308 boxes
    (512, 512, 6, 7),  # small input, 42 boxes
)


def shelf_boxes(rng: np.random.Generator, height: int, width: int, rows: int, cols: int):
    """``rows x cols`` touching products, each side jittered inwards by up to 3 px."""
    xs = np.linspace(0, width, cols + 1)
    ys = np.linspace(0, height, rows + 1)
    x1, y1 = np.meshgrid(xs[:-1], ys[:-1])
    x2, y2 = np.meshgrid(xs[1:], ys[1:])
    boxes = np.stack([x1.ravel(), y1.ravel(), x2.ravel(), y2.ravel()], axis=1)
    jitter = rng.uniform(0, 3, boxes.shape) * np.array([1, 1, -1, -1])
    return boxes + jitter


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (and cache fill)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=21, help="timed runs per figure (median)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)

    print(
        f"{'input':>10} {'GT':>4} {'anchors':>8} {'stage1 ms':>10} {'stage2 ms':>10} "
        f"{'anchors ms (cold)':>18} {'anchors ms (cached)':>20}"
    )
    for height, width, rows, cols in CASES:
        gt = shelf_boxes(rng, height, width, rows, cols)
        images = [np.zeros((height, width, 3), dtype=np.uint8)]
        annotations = [{"bboxes": gt, "labels": np.zeros(len(gt), dtype=np.int64)}]
        anchors = anchors_for_shape((height, width))

        t1 = median_ms(lambda: stage1_targets(anchors, images, annotations, 1), args.repeats)
        t2 = median_ms(lambda: stage2_targets(anchors, images, annotations, 1), args.repeats)

        def cold():
            anchors_mod._pyramid.cache_clear()
            anchors_for_shape((height, width))

        t_cold = median_ms(cold, args.repeats)
        t_hot = median_ms(lambda: anchors_for_shape((height, width)), args.repeats)
        print(
            f"{height:>4}x{width:<5} {len(gt):>4} {len(anchors):>8} {t1:>10.2f} {t2:>10.2f} "
            f"{t_cold:>18.2f} {t_hot:>20.2f}"
        )

    # utils/boxes.py NMS (the EM-Merger's final pass, IoMin 0.3): dense shelf = 150 objects with
    # jittered duplicate detections; sparse = disjoint small boxes (nearly all kept, worst case).
    print(f"\n{'NMS case':>22} {'boxes':>6} {'kept':>6} {'ms':>8}")
    for n in (2000, 20000):
        centres = rng.uniform(0, 1000, (150, 2))[rng.integers(0, 150, n)]
        centres += rng.normal(0, 5, (n, 2))
        half = rng.uniform(20, 40, (n, 2))
        dense = np.hstack([centres - half, centres + half])
        xy = rng.uniform(0, 5000, (n, 2))
        sparse = np.hstack([xy, xy + rng.uniform(5, 30, (n, 2))])
        scores = rng.random(n)
        for name, boxes in (("dense shelf", dense), ("sparse (worst case)", sparse)):
            kept = len(non_max_suppression(boxes, scores, 0.3))
            ms = median_ms(lambda b=boxes: non_max_suppression(b, scores, 0.3), 5)
            print(f"{name:>22} {n:>6} {kept:>6} {ms:>8.2f}")


if __name__ == "__main__":
    main()
