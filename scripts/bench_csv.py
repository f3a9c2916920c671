"""Benchmark: parse a synthetic SKU-110K-sized annotation CSV (§8.1, §8.5).

Writes ``--rows`` rows (default 1.2 M, the train split) over ``--images`` images in the 8-column
format to a temporary folder, then reports the median wall time of ``parse_annotations`` over
``--runs`` runs. Usage::

    PYTHONPATH=. .venv/bin/python scripts/bench_csv.py [--rows 1200000] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np


def write_csv(path: str, rows: int, images: int, seed: int = 0) -> None:
    """Random valid boxes on 2448x3264 images, one row per box, images in contiguous blocks."""
    rng = np.random.default_rng(seed)
    image_ids = np.sort(rng.integers(0, images, rows))
    x1 = rng.integers(0, 2300, rows)
    y1 = rng.integers(0, 3100, rows)
    x2 = x1 + rng.integers(20, 140, rows)
    y2 = y1 + rng.integers(20, 160, rows)
    with open(path, "w") as file:
        for i, a, b, c, d in zip(
            image_ids.tolist(), x1.tolist(), y1.tolist(), x2.tolist(), y2.tolist()
        ):
            file.write(f"train_{i}.jpg,{a},{b},{c},{d},object,2448,3264\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_200_000)
    parser.add_argument("--images", type=int, default=8_219)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)

    from object_detector_retinanet.keras_retinanet.preprocessing.csv_generator import (
        parse_annotations,
    )

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "annotations_train.csv")
        write_csv(path, args.rows, args.images)
        size_mb = os.path.getsize(path) / 1e6
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            result = parse_annotations(path, {"object": 0})
            times.append(time.perf_counter() - start)
        boxes = sum(len(value["labels"]) for value in result.values())
    print(f"rows={args.rows} images={len(result)} boxes={boxes} file={size_mb:.1f} MB")
    print(
        f"parse_annotations: median {statistics.median(times):.2f} s over {args.runs} runs "
        f"(min {min(times):.2f}, max {max(times):.2f})"
    )


if __name__ == "__main__":
    main()
