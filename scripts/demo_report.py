"""Print the demo's closing report: the paper's ablation table, or runs side by side.

With ``--ablation``, prints the table that ``ablation.py --out`` wrote (``ablation.json``: hard or
Soft-IoU score, NMS or EM-Merger) and checks each evaluated run (the JSON files that
``evaluate.py --json`` writes, same keys as ``sku110k-evaluate``) against its full-approach row;
without it, prints the runs' metrics side by side. Then, optionally, the rank correlation that
``scripts/soft_iou_correlation.py --json`` writes.

Usage:
    python scripts/demo_report.py --ablation ablation.json EM-Merger=metrics_em.json \\
        [--correlation soft_iou.json]
    python scripts/demo_report.py EM-Merger=metrics_em.json NMS=metrics_nms.json
"""

from __future__ import annotations

import argparse
import json
import math
import os

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


def runs_table(runs: list[tuple[str, dict]]) -> list[str]:
    """The runs' metrics, one column per run."""
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
    return lines


def ablation_lines(ablation: dict, runs: list[tuple[str, dict]]) -> list[str]:
    """The ablation table, then each run's AP beside its full-approach row's (the same merge)."""
    from object_detector_retinanet.keras_retinanet.ablation import format_text
    from object_detector_retinanet.keras_retinanet.utils.eval import FULL_APPROACH

    lines = [format_text(ablation)]
    full = next(row for row in ablation["rows"] if row["paper"] == FULL_APPROACH)
    for label, data in runs:
        ours = (full["metrics"] or {}).get("AP")
        lines.append(
            f"{label} (predict + evaluate.py): AP {fmt(data['metrics'].get('AP'))}; "
            f"the row {full['setting']}: {fmt(ours)}"
        )
    return lines


def report(
    runs: list[tuple[str, dict]], correlation: dict | None = None, ablation: dict | None = None
) -> str:
    """The ablation table (or the runs' table without one) and the notes below it, as text."""
    lines = ablation_lines(ablation, runs) if ablation else runs_table(runs)
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
    parser.add_argument("runs", nargs="*", type=labelled_path, metavar="LABEL=METRICS_JSON")
    parser.add_argument("--ablation", default=None, help="ablation.py's ablation.json")
    parser.add_argument("--correlation", default=None, help="soft_iou_correlation.py's JSON")
    args = parser.parse_args(argv)
    if not args.runs and not args.ablation:
        parser.error("give --ablation JSON or at least one LABEL=METRICS_JSON")
    runs = []
    for label, path in args.runs:
        with open(path, encoding="utf-8") as f:
            runs.append((label, json.load(f)))
    correlation = None
    if args.correlation:
        with open(args.correlation, encoding="utf-8") as f:
            correlation = json.load(f)
    ablation = None
    if args.ablation:
        with open(args.ablation, encoding="utf-8") as f:
            ablation = json.load(f)
    text = report(runs, correlation, ablation)
    print(text)
    if args.ablation:
        from object_detector_retinanet.keras_retinanet.ablation import OUTPUT_NAMES

        folder = os.path.dirname(args.ablation)
        print("Ablation: " + ", ".join(os.path.join(folder, n) for n in OUTPUT_NAMES))
    if args.runs:
        print("Evaluation JSON (sku110k-evaluate keys): " + ", ".join(p for _, p in args.runs))
    return text


if __name__ == "__main__":
    main()
