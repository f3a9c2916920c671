"""The paper's ablation table (Goldman et al., CVPR 2019, Table 2) from saved raw detections.

Usage:
    ablation.py RAW_DIR [--annotations GT.csv] [--classes CLASSES.csv] [--hard_score_rate 0.5]
                [--out DIR] [--count-threshold 0.5] [--max-dets 300] [--processes N]

RAW_DIR is what ``predict.py --save-raw RAW_DIR`` wrote: one file per image with the rows it gave
the merger, hard and Soft-IoU scores apart. Every image is merged again, without the network,
under each setting of the table:

  Base & NMS            confidence = hard score (r = 1), IoU-NMS at 0.5
  Soft-IoU & NMS        confidence = Soft-IoU score (r = 0), IoU-NMS at 0.5
  Base & EM-Merger      r = 1 into the EM-Merger
  Soft-IoU & EM-Merger  r = --hard_score_rate (the full approach), then once per other
                        EM-Merger --selection

with confidence = r*hard + (1 - r)*soft. Each row is scored as evaluate.py scores a results CSV
(AP@[.50:.95], AP.50, AP.75, AR300, P@R=.5 at IoU .75, count MAE and RMSE; §12.2), so a row equals
evaluate.py on the results of predict.py run with that merger, selection and r. The paper's rows
are printed below ours. Raw files without a Soft-IoU score (a stage-1 model) skip the rows that
need it. --out DIR writes the table as ablation.csv, ablation.json and ablation.md.

GT images without a raw file count as images with zero detections (with a warning); raw files of
images that are not in the GT are an error (likely the wrong annotations file).
"""

from __future__ import annotations

import argparse
import os
import sys

if __name__ == "__main__" and not __package__:  # run as a file: make the package importable
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), *[".."] * 3)))

from object_detector_retinanet.keras_retinanet import config
from object_detector_retinanet.keras_retinanet.bin.evaluate import (
    add_ground_truth_args,
    add_metric_args,
    check_ground_truth_args,
    positive_int_arg,
    read_ground_truth,
    warn_images_without_detections,
)
from object_detector_retinanet.keras_retinanet.errors import reports_input_errors
from object_detector_retinanet.utils import resolve_path


def _rate(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= rate <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {text}")
    return rate


def parse_args(argv=None) -> argparse.Namespace:
    """Parse the command line (``argv`` defaults to ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("raw_dir", help="raw-detections folder written by predict.py --save-raw")
    add_ground_truth_args(parser)
    parser.add_argument(
        "--hard_score_rate",
        type=_rate,
        default=config.PredictConfig.hard_score_rate,
        help="r of the full approach's confidence = r*hard + (1 - r)*soft, as predict's "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--out", default=None, help="folder for ablation.csv, ablation.json and ablation.md"
    )
    add_metric_args(parser)
    parser.add_argument(
        "--processes",
        type=positive_int_arg,
        default=1,
        help="worker processes for the merging (default 1: this process)",
    )
    args = parser.parse_args(argv)
    args.raw_dir = resolve_path(args.raw_dir)
    check_ground_truth_args(parser, args)
    args.out = resolve_path(args.out)
    return args


@reports_input_errors
def main(argv=None) -> dict:
    """Compute, print and optionally write the ablation table; return the report dict."""
    from object_detector_retinanet.keras_retinanet.ablation import (
        ablate_folder,
        format_text,
        write_outputs,
    )

    args = parse_args(argv)
    gt = read_ground_truth(args.annotations, args.classes)
    report = ablate_folder(
        args.raw_dir,
        gt,
        hard_score_rate=args.hard_score_rate,
        count_threshold=args.count_threshold,
        max_dets=args.max_dets,
        processes=args.processes,
    )
    warn_images_without_detections(
        report["images_without_raw"], len(gt), f"raw detections in {args.raw_dir}"
    )
    print(f"Raw detections: {args.raw_dir}")
    print(f"GT: {args.annotations}")
    print(format_text(report))
    if args.out:
        print("Written: " + ", ".join(write_outputs(report, args.out)))
    return report


if __name__ == "__main__":
    main()
