#!/usr/bin/env python
"""Detect objects with a trained SKU-110K model and resolve overlaps with the EM-Merger.

Usage (as the original; options of the main parser go before ``csv``, or after MODEL in the
one-token ``--opt=value`` form):

    python object_detector_retinanet/keras_retinanet/bin/predict.py csv MODEL --hard_score_rate=0.5
    python object_detector_retinanet/keras_retinanet/bin/predict.py --base_dir MY_IMAGES \\
        csv --no-annotations MODEL
    python object_detector_retinanet/keras_retinanet/bin/predict.py csv --images shelf.jpg MODEL

Inputs: the annotation CSV of the data root (default), ``csv --annotations CSV``, every image of
``--base_dir`` (``csv --no-annotations``), or ``csv --images PATH`` with PATH one image, a folder
(every image in it) or a CSV: annotation rows (ground truth drawn) or one image name a line (no
ground truth), the names relative to ``--base_dir`` (default: the CSV's folder).

For every image (in CSV order): the network gives every anchor box with objectness ("hard" score)
above ``--score-threshold`` and its Soft-IoU ("soft" score); confidence = r·hard + (1−r)·soft with
r = ``--hard_score_rate``; the top 9,999 by confidence go to the EM-Merger, which keeps one
detection per object. Results are appended image by image to
``<results-dir>/detections_output_iou_{r}_{stamp}.csv`` (``image_id,x1,y1,x2,y2,confidence,
hard_score``, boxes in original-image pixels) and drawn to ``<save-path>/{i}.png`` (ground truth in
green when the CSV has it, detections with confidence > 0.5 in red).

Beside the results CSV, ``<results CSV>.done`` lists every finished image (with or without
detections), one ``image_id`` a line. ``--resume <results CSV>`` continues an interrupted run in
that file: finished images are skipped, an image whose rows were cut short is predicted again, so
every image is in the file exactly once. ``--shard i/n`` predicts the i-th of n contiguous blocks
of the image list (``_shard{i}of{n}`` in the file name): the n files concatenated in shard order
hold the rows of one unsharded run, in its order.

MODEL is a stage-2 snapshot (``iou_resnet50_csv_NN.weights.h5``) or an original Keras-2 ``.h5``,
loaded by layer name; a stage-1 snapshot also works (without a Soft-IoU head, confidence = hard).
Without ground truth (``csv --no-annotations``, or when the default annotations file is absent)
every image in ``--base_dir`` is predicted.

Exit status: 0; 1 when some images could not be read (the others are predicted, the skipped ones
listed on the last line); 2 for bad input (a malformed CSV, an unreadable weights file).
"""

import argparse
import os
import sys

if __name__ == "__main__" and not __package__:  # run as a file: make the package importable
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), *[".."] * 3)))

from object_detector_retinanet import utils as paths  # noqa: E402
from object_detector_retinanet.keras_retinanet import config  # noqa: E402
from object_detector_retinanet.keras_retinanet.bin import _args  # noqa: E402
from object_detector_retinanet.keras_retinanet.errors import reports_input_errors  # noqa: E402
from object_detector_retinanet.keras_retinanet.preprocessing.csv_annotations import (  # noqa: E402
    IMAGE_EXTENSIONS,
    read_image_list,
)
from object_detector_retinanet.keras_retinanet.utils.results_csv import (  # noqa: E402
    results_filename,
)
from object_detector_retinanet.keras_retinanet.utils.runtime import (  # noqa: E402
    setup_devices,
    tune_allocator,
)


def _rate(value):
    """``--hard_score_rate`` as the original: a string converted with float, '' meaning 0.5."""
    if value in ("", None):
        return config.PredictConfig.hard_score_rate
    rate = float(value)
    if not 0.0 <= rate <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {value}")
    return rate


#: The exit status of a run that skipped unreadable images (2 is bad input, as argparse's).
SKIPPED_IMAGES_STATUS = 1


def _shard(value):
    """``--shard i/n`` → ``(i, n)`` with 1 <= i <= n."""
    try:
        shard, shards = (int(part) for part in value.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n such as 2/4, got {value!r}") from None
    if not 1 <= shard <= shards:
        raise argparse.ArgumentTypeError(f"need 1 <= i <= n, got {value!r}")
    return shard, shards


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    csv = _args.add_csv_subparser(parser, "test")
    csv.add_argument(
        "--no-annotations",
        action="store_true",
        help="Predict every image in --base_dir without ground truth (B7).",
    )
    csv.add_argument(
        "--images",
        metavar="PATH",
        default=None,
        help="What to predict instead of the annotations: one image, a folder (every image in "
        "it), or a CSV of annotation rows or of image names, one a line (no ground truth), "
        "relative to --base_dir (default: the CSV's folder).",
    )
    parser.add_argument(
        "model", help="Weights file (stage-2 snapshot, stage-1 snapshot or original .h5)."
    )
    parser.add_argument(
        "--hard_score_rate",
        type=_rate,
        default=config.PredictConfig.hard_score_rate,
        help="Weight r of the hard score in the confidence (default %(default)s).",
    )
    parser.add_argument("--base_dir", default=None, help="Image folder (default: <root>/images).")
    parser.add_argument(
        "--convert-model",
        type=int,
        default=1,
        help="Accepted for compatibility: the inference model is always built from the weights.",
    )
    _args.add_backbone_arg(parser, help="Backbone (default %(default)s).")
    _args.add_gpu_arg(parser, help="GPU id to use (sets CUDA_VISIBLE_DEVICES).")
    _args.add_score_threshold_arg(parser)
    parser.add_argument(
        "--iou-threshold",
        type=float,
        default=0.75,
        help="Accepted for compatibility (unused, as in the original).",
    )
    parser.add_argument(
        "--save-path",
        default=None,
        help="Folder for the drawn images (default: <root>/res_images_iou).",
    )
    parser.add_argument(
        "--results-dir", default=None, help="Folder for the results CSV (default: <root>/results)."
    )
    parser.add_argument("--no-draw", dest="draw", action="store_false", help="Skip the drawings.")
    parser.add_argument(
        "--captions",
        action="store_true",
        help="Caption the drawn boxes as the original did (class name on the ground truth, "
        "'hard: confidence' on detections); off by default, since on packed shelves they cover "
        "the neighbouring products.",
    )
    parser.add_argument(
        "--max-detections",
        type=int,
        default=config.PredictConfig.max_detections,
        help="Raw detections per image passed to the merger (default %(default)s).",
    )
    parser.add_argument(
        "--merger",
        choices=("em", "nms"),
        default="em",
        help="Post-processor: the EM-Merger (default) or plain IoU-NMS at 0.5.",
    )
    parser.add_argument(
        "--selection",
        choices=config.SELECTIONS,
        default="original",
        help="How the EM-Merger picks one detection per object: 'original' (default, the "
        "paper's code: 0.5*confidence + 0.5*hard) or e.g. 'soft_iou' (the Soft-IoU score; better "
        "when objectness is a poor guide to box quality). See scripts/bench_merger.py.",
    )
    parser.add_argument(
        "--resume",
        metavar="RESULTS_CSV",
        default=None,
        help="Continue an interrupted run in this results CSV: images it (and its .done file) "
        "lists as finished are skipped, the others appended; a half-written image is redone.",
    )
    parser.add_argument(
        "--shard",
        type=_shard,
        default=None,
        metavar="i/n",
        help="Predict only the i-th of n contiguous blocks of the image list (1 <= i <= n); "
        "the n results CSVs concatenated in shard order are the unsharded result.",
    )
    parser.add_argument(
        "--save-raw",
        metavar="DIR",
        default=None,
        help="Also save every image's raw detections (the merger's input, hard and soft scores "
        "apart) to DIR/<image name>.npz, to re-merge them later without the network.",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="Images the network takes at once (default %(default)s); only images of equal "
        "network-input size share a batch. The network's outputs then agree with batch size 1 "
        "to float rounding (its kernels depend on the batch size), not bit for bit.",
    )
    parser.add_argument(
        "--name-by-image",
        action="store_true",
        help="Name the drawings after the images (shelf_0042.png for shelf_0042.jpg) instead of "
        "{i}.png, i = the position in the image list.",
    )
    _args.add_image_size_args(parser)
    args = parser.parse_args(argv)
    return check_args(parser, args)


def check_args(parser, args):
    args.model = paths.resolve_path(args.model)  # B1: taken as given, not joined onto the root
    if not os.path.isfile(args.model):
        parser.error(f"model file not found: {args.model}")
    args.image_names = None
    if args.images:
        _check_images(parser, args)
    else:
        args.base_dir = paths.resolve_path(args.base_dir) if args.base_dir else paths.image_path()
    if not os.path.isdir(args.base_dir):
        parser.error(f"image folder not found: {args.base_dir} (pass --base_dir DIR before 'csv').")
    if args.images:
        pass  # set by _check_images
    elif args.no_annotations:
        args.annotations = None
    elif args.annotations:
        args.annotations = paths.resolve_path(args.annotations)
        if not os.path.isfile(args.annotations):
            parser.error(f"--annotations: file not found: {args.annotations}")
    else:
        default = os.path.join(paths.annotation_path(), "annotations_test.csv")
        args.annotations = default if os.path.isfile(default) else None
    args.classes = paths.resolve_path(args.classes)
    args.save_path = (
        paths.resolve_path(args.save_path)
        if args.save_path
        else os.path.join(paths.root_dir(), "res_images_iou")
    )
    args.results_dir = (
        paths.resolve_path(args.results_dir)
        if args.results_dir
        else os.path.join(paths.root_dir(), "results")
    )
    if args.selection in config.SOFT_SELECTIONS and args.hard_score_rate >= 1:
        parser.error(  # the merger recovers soft = (confidence - r * hard) / (1 - r)
            f"--selection {args.selection} needs the soft score: use --hard_score_rate below 1."
        )
    if not 0 < args.max_detections:
        parser.error("--max-detections must be positive.")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1.")
    if args.resume:
        args.resume = paths.resolve_path(args.resume)
        if not os.path.isfile(args.resume):
            parser.error(f"--resume: results file not found: {args.resume}")
    if args.save_raw:
        args.save_raw = paths.resolve_path(args.save_raw)
    return args


def _check_images(parser, args):
    """``csv --images PATH``: set ``base_dir`` and ``annotations`` or ``image_names``."""
    if args.annotations or args.no_annotations:
        parser.error("csv --images replaces --annotations and --no-annotations: pass one of them.")
    path = paths.resolve_path(args.images)
    if os.path.isdir(path) or (os.path.isfile(path) and path.lower().endswith(IMAGE_EXTENSIONS)):
        if args.base_dir:
            parser.error("--base_dir goes with a CSV given to --images, not an image or a folder.")
        args.annotations = None
        if os.path.isdir(path):
            args.base_dir = path  # every image of the folder
        else:
            args.base_dir, name = os.path.split(path)
            args.image_names = [name]
    elif os.path.isfile(path):
        args.base_dir = (
            paths.resolve_path(args.base_dir) if args.base_dir else os.path.dirname(path)
        )
        args.image_names = read_image_list(path)
        args.annotations = path if args.image_names is None else None
    else:
        parser.error(f"--images: no such image, folder or CSV: {path}")


@reports_input_errors
def main(argv=None):
    """Run the prediction; returns the path of the results CSV."""
    args = parse_args(argv)
    tune_allocator()  # before TensorFlow allocates: keep freed buffers for the next image
    print(f"hard_score_rate={args.hard_score_rate}")
    setup_devices(args.gpu)

    from object_detector_retinanet.keras_retinanet.inference import (
        Predictor,
        open_images,
        shard_indices,
    )

    generator = open_images(args.annotations, args.classes, args.base_dir, args.image_names)
    if generator.num_classes() != 1:  # B24
        raise SystemExit(
            f"{args.classes}: {generator.num_classes()} classes; predict supports single-class "
            "(SKU-110K) models only."
        )
    print("Loading model, this may take a second...")
    predictor = Predictor.from_weights(
        args.model,
        backbone=args.backbone,
        num_classes=generator.num_classes(),
        merger=args.merger,
        selection=args.selection,
        hard_score_rate=args.hard_score_rate,
        score_threshold=args.score_threshold,
        max_detections=args.max_detections,
        image_min_side=args.image_min_side,
        image_max_side=args.image_max_side,
        captions=args.captions,
    )
    indices = shard_indices(generator.size(), *args.shard) if args.shard else None
    if args.resume:
        results_path = args.resume
    else:
        stamp = paths.safe_timestamp()
        if args.shard:  # shards started in the same second write different files
            stamp += "_shard{}of{}".format(*args.shard)
        paths.create_folder(args.results_dir)
        results_path = results_filename(args.results_dir, args.hard_score_rate, stamp)
    run = predictor.run(
        generator,
        results_path,
        save_dir=paths.create_folder(args.save_path) if args.draw else None,
        overlap=True,  # merge image i in a thread while the network runs on image i + 1
        indices=indices,
        resume=bool(args.resume),
        raw_dir=args.save_raw,
        batch_size=args.batch_size,
        name_by_image=args.name_by_image,
    )
    if args.resume:
        print(f"Resumed: {run.resumed} of {run.images} images were already in {results_path}")
    print(f"Saved {results_path}")
    if run.skipped:
        listed = ", ".join(f"{name} ({reason})" for name, reason in run.skipped)
        print(
            f"error: {len(run.skipped)} of {run.images} images could not be read and were "
            f"skipped: {listed}",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(SKIPPED_IMAGES_STATUS)
    return results_path


if __name__ == "__main__":
    main()
