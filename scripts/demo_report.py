"""Print the demo's closing report: the metrics of several post-processors side by side.

Reads the JSON files that ``evaluate.py --json`` writes (same keys as ``sku110k-evaluate``) and,
optionally, the one ``scripts/soft_iou_correlation.py --json`` writes, and prints one table.

Usage:
    python scripts/demo_report.py EM-Merger=metrics_em.json NMS=metrics_nms.json \\
        [--correlation soft_iou.json]
"""

from __future__ import annotations

import argparse
import json
import math

ROWS = (  # (label, key in evaluate.py's "metrics")
    ("AP@[.50:.95]", "AP"),
    ("AP.50", "AP50"),
    ("AP.75", "AP75"),
    ("AR300", "AR300"),
    ("P@R=.5 (IoU .75)", "P@R=.5_IoU75"),
    ("count MAE", "MAE"),
    ("count RMSE", "RMSE"),
)


def labelled_path(text: str) -> tuple[str, str]:
    label, sep, path = text.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"expected LABEL=PATH, got {text!r}")
    return label, path


def fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.3f}"


def report(runs: list[tuple[str, dict]], correlation: dict | None = None) -> str:
    """The table (one column per run) and the notes below it, as text."""
    width = max(10, *(len(label) for label, _ in runs))
    settings = runs[0][1]["settings"]
    lines = [
        f"{settings['num_gt_boxes']} objects in {runs[0][1]['metrics']['num_images']} test "
        f"images; pycocotools, maxDets {settings['max_dets']}",
        f"{'metric':<18}" + "".join(f"{label:>{width + 2}}" for label, _ in runs),
    ]
    for name, key in ROWS:
        values = "".join(f"{fmt(data['metrics'].get(key)):>{width + 2}}" for _, data in runs)
        lines.append(f"{name:<18}{values}")
    if correlation:
        lines.append(
            f"Soft-IoU vs the true IoU of the box (Spearman, {correlation['anchors']} positive "
            f"anchors of {correlation['images']} test images): {correlation['spearman_soft']:.3f}"
            f" (objectness: {correlation['spearman_hard']:.3f})"
        )
    return "\n".join(lines)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=labelled_path, metavar="LABEL=METRICS_JSON")
    parser.add_argument("--correlation", default=None, help="soft_iou_correlation.py's JSON")
    args = parser.parse_args(argv)
    runs = []
    for label, path in args.runs:
        with open(path, encoding="utf-8") as f:
            runs.append((label, json.load(f)))
    correlation = None
    if args.correlation:
        with open(args.correlation, encoding="utf-8") as f:
            correlation = json.load(f)
    text = report(runs, correlation)
    print(text)
    print("Evaluation JSON (sku110k-evaluate keys): " + ", ".join(p for _, p in args.runs))
    return text


if __name__ == "__main__":
    main()
