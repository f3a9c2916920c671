"""Score predict's results CSV against SKU-110K ground truth (Goldman et al., CVPR 2019, Table 2).

Usage:
    evaluate.py RESULTS.csv [--annotations GT.csv] [--classes CLASSES.csv]
                [--score-field confidence|hard_score] [--count-threshold 0.5] [--max-dets 300]
                [--plots DIR] [--json OUT]

Reports AP@[.50:.05:.95], AP.50, AP.75, AR300, P@R=.5 (at IoU .75 and .50), MAE and RMSE next to
the paper's full-approach row, following the recommended protocol of §12.2: every detection of
the CSV is used; pycocotools COCOeval with maxDets=[300] throughout, areaRng all, 101 recall
points, boxes as COCO [x, y, w, h]. Results rows join the GT by file name (the "images/" folder of
image_id is stripped). Counting: a detection counts when its score is > --count-threshold (default
0.5, what predict draws; "all" counts every detection). Score the test split: val-split numbers or
other mAP code are not comparable with the paper.

GT images without a results row count as images with zero detections (with a warning); results
for images that are not in the GT are an error (likely the wrong annotations file).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

if __name__ == "__main__" and not __package__:  # run as a file: make the package importable
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), *[".."] * 3)))

from object_detector_retinanet.keras_retinanet import config
from object_detector_retinanet.keras_retinanet.errors import InputError, reports_input_errors
from object_detector_retinanet.keras_retinanet.utils.eval import (
    COUNT_PLOT_NAME,
    DEFAULT_COUNT_THRESHOLD,
    FULL_APPROACH,
    MAX_DETS,
    PAPER_RESULTS,
    PR_PLOT_NAME,
    RELEASED_WEIGHTS_COCO,
    align_detections,
    evaluate_detections,
)
from object_detector_retinanet.keras_retinanet.utils.results_csv import (
    SCORE_FIELDS,
    read_results_csv,
)
from object_detector_retinanet.utils import annotation_path, resolve_path


def count_threshold_arg(text: str) -> float | None:
    if text.strip().lower() in ("all", "none"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'all', got {text!r}") from None


def positive_int_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_ground_truth_args(parser: argparse.ArgumentParser) -> None:
    """``--annotations`` and ``--classes``; see :func:`check_ground_truth_args`."""
    parser.add_argument(
        "--annotations",
        default=None,
        help="GT annotations CSV (8 columns, no header); default "
        "<root>/annotations/annotations_test.csv",
    )
    parser.add_argument(
        "--classes",
        default=config.DEFAULT_CLASS_FILE,
        help="class map CSV (class_name,class_id); default bin/class_mappings.csv",
    )


def add_metric_args(parser: argparse.ArgumentParser) -> None:
    """``--count-threshold`` and ``--max-dets`` of :func:`~..utils.eval.evaluate_detections`."""
    parser.add_argument(
        "--count-threshold",
        type=count_threshold_arg,
        default=DEFAULT_COUNT_THRESHOLD,
        help="count detections with score > this for MAE/RMSE (default 0.5; "
        "'all' counts every detection)",
    )
    parser.add_argument(
        "--max-dets",
        type=positive_int_arg,
        default=MAX_DETS,
        help="COCOeval maxDets, the only slot (default 300, §12.2)",
    )


def check_ground_truth_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Default ``--annotations`` to the test split under the data root; both must be files."""
    if args.annotations is None:
        args.annotations = os.path.join(annotation_path(), "annotations_test.csv")
    args.annotations = resolve_path(args.annotations)
    args.classes = resolve_path(args.classes)
    for flag, path in (("--annotations", args.annotations), ("--classes", args.classes)):
        if not os.path.isfile(path):
            parser.error(f"{flag}: no such file: {path}")


def parse_args(argv=None) -> argparse.Namespace:
    """Parse the command line (``argv`` defaults to ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "results",
        help="results CSV written by predict (image_id,x1,y1,x2,y2,confidence,hard_score)",
    )
    add_ground_truth_args(parser)
    parser.add_argument(
        "--score-field",
        choices=SCORE_FIELDS,
        default="confidence",
        help="results column used as the detection score (default confidence)",
    )
    add_metric_args(parser)
    parser.add_argument("--plots", default=None, help="folder for the PR and count plots (PNG)")
    parser.add_argument("--json", default=None, help="write the metrics and settings to this JSON")
    args = parser.parse_args(argv)

    args.results = resolve_path(args.results)
    if not os.path.isfile(args.results):
        parser.error(f"results: no such file: {args.results}")
    check_ground_truth_args(parser, args)
    args.plots = resolve_path(args.plots)
    args.json = resolve_path(args.json)
    return args


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return f"{value:.3f}"


def format_table(metrics: dict) -> str:
    """Our metrics beside the paper's full approach and the released weights under pycocotools."""
    ar = f"AR{metrics['max_dets']}"
    paper = PAPER_RESULTS[FULL_APPROACH]
    # (label, our key, paper key, released-weights key)
    rows = [
        ("AP@[.50:.95]", "AP", "AP", "AP"),
        ("AP.50", "AP50", None, "AP50"),
        ("AP.75", "AP75", "AP75", "AP75"),
        (ar, ar, "AR300", "AR300"),
        (f"{ar} @ IoU .50", f"{ar}_IoU50", None, "AR300_IoU50"),
        ("P@R=.5 (IoU .75)", "P@R=.5_IoU75", "P@R=.5", None),
        ("P@R=.5 (IoU .50)", "P@R=.5_IoU50", None, None),
        ("MAE", "MAE", "MAE", None),
        ("RMSE", "RMSE", "RMSE", None),
    ]
    header = ("metric", "ours", "paper (full approach)", "released weights (pycocotools)")
    lines = [f"{header[0]:<20} {header[1]:>8}   {header[2]:>22}   {header[3]:>30}"]
    for label, ours, paper_key, released_key in rows:
        lines.append(
            f"{label:<20} {_fmt(metrics.get(ours)):>8}   "
            f"{_fmt(paper.get(paper_key) if paper_key else None):>22}   "
            f"{_fmt(RELEASED_WEIGHTS_COCO.get(released_key) if released_key else None):>30}"
        )
    lines.append("paper: Poster.pdf table, voc_eval-style code, IoU of its P@R=.5 not stated;")
    lines.append("released weights: ParallelDots benchmark, pycocotools maxDets=300 (§12.3)")
    return "\n".join(lines)


def _json_safe(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    return value


def read_ground_truth(annotations: str, classes: str) -> dict:
    """GT image name → boxes ``(M, 4)`` from the annotations CSV (class-agnostic, §12.2).

    Raises:
        InputError: an unreadable CSV, or one without images.
    """
    # The GT reader is imported here so `--help` works without the preprocessing package.
    from object_detector_retinanet.keras_retinanet.preprocessing.csv_annotations import (
        parse_annotations,
        read_classes,
    )

    class_map = read_classes(classes)
    if len(class_map) > 1:
        print(
            f"Note: {len(class_map)} classes in {classes}; evaluation is class-agnostic "
            "(results CSVs carry no label)",
            file=sys.stderr,
        )
    gt = {
        name: entry["bboxes"] for name, entry in parse_annotations(annotations, class_map).items()
    }
    if not gt:
        raise InputError(f"{annotations}: no images in the ground truth")
    return gt


def warn_images_without_detections(missing: list[str], num_gt: int, what: str) -> None:
    """Warn (stderr) that ``missing`` GT images have no ``what`` and count as having none."""
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        print(
            f"Warning: {len(missing)} of {num_gt} GT images have no {what} "
            f"and count as images with zero detections ({shown})",
            file=sys.stderr,
        )


@reports_input_errors
def main(argv=None) -> dict:
    """Evaluate a results CSV; print the comparison table; return the metrics dict."""
    args = parse_args(argv)
    gt = read_ground_truth(args.annotations, args.classes)
    detections = read_results_csv(args.results, score_field=args.score_field)
    detections, missing = align_detections(
        gt, detections, source=args.results, gt_source=args.annotations
    )
    warn_images_without_detections(missing, len(gt), f"rows in {args.results}")

    metrics = evaluate_detections(
        gt,
        detections,
        count_threshold=args.count_threshold,
        max_dets=args.max_dets,
        plot_dir=args.plots,
    )

    num_dets = sum(len(boxes) for boxes in detections.values())
    num_gt = sum(len(boxes) for boxes in gt.values())
    rule = (
        "every detection"
        if args.count_threshold is None
        else f"detections with {args.score_field} > {args.count_threshold}"
    )
    print(f"Results: {args.results}")
    print(
        f"GT: {args.annotations} ({metrics['num_images']} images, {num_gt} boxes; "
        f"{num_dets} detections, score = {args.score_field}, maxDets = {args.max_dets})"
    )
    print(f"Counting rule: predicted count = {rule}")
    print(format_table(metrics))

    if args.plots:
        print(
            f"Plots: {os.path.join(args.plots, PR_PLOT_NAME)}, "
            f"{os.path.join(args.plots, COUNT_PLOT_NAME)}"
        )
    if args.json:
        folder = os.path.dirname(args.json)
        if folder:
            os.makedirs(folder, exist_ok=True)
        report = {
            "metrics": _json_safe(metrics),
            "settings": {
                "results": args.results,
                "annotations": args.annotations,
                "score_field": args.score_field,
                "count_threshold": args.count_threshold,
                "max_dets": args.max_dets,
                "num_gt_boxes": num_gt,
                "num_detections": num_dets,
                "images_without_results": len(missing),
            },
            "paper": {FULL_APPROACH: PAPER_RESULTS[FULL_APPROACH]},
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        print(f"Metrics written to {args.json}")
    return metrics


if __name__ == "__main__":
    main()
