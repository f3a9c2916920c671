"""Argument parsing of the training command lines, and flags the other command lines share.

``train.py`` and ``train_iou.py`` take the same flags except for the initial weights, which their
:class:`~object_detector_retinanet.keras_retinanet.training.stages.Stage` decides (§4.1, §4.2).
:func:`parse_train_args` parses and checks them and fills the data-root defaults.

Nothing here imports TensorFlow, and the checks open no weights file: arguments are parsed and
checked first, so a mistyped flag fails in a fraction of a second with a message saying what to
do. Checks that need a weights file's contents happen when the training driver opens it.
"""

from __future__ import annotations

import argparse
import os

from object_detector_retinanet import utils as paths
from object_detector_retinanet.keras_retinanet import config
from object_detector_retinanet.keras_retinanet.training.distribute import tf_config
from object_detector_retinanet.keras_retinanet.training.driver import (
    FREEZE_BN_AFTER_NEEDS_LEARNING,
)
from object_detector_retinanet.keras_retinanet.training.stages import Stage

__all__ = [
    "add_backbone_arg",
    "add_common_train_args",
    "add_csv_subparser",
    "add_gpu_arg",
    "add_image_size_args",
    "add_score_threshold_arg",
    "check_train_args",
    "parse_train_args",
]


# --------------------------------------------------------------------------------------------- #
# Flags of several command lines
# --------------------------------------------------------------------------------------------- #
def add_csv_subparser(parser, split, val_split=None):
    """The required ``csv`` sub-command with the original's data flags.

    Main-parser options must come before the word ``csv`` (the sub-parser takes the rest), as in
    the original: ``train_iou.py --weights W csv``.
    """
    subparsers = parser.add_subparsers(
        help="Dataset type (only 'csv', the SKU-110K format, is supported).", dest="dataset_type"
    )
    subparsers.required = True
    csv = subparsers.add_parser("csv", help="SKU-110K-format CSV data.")
    csv.add_argument(
        "--annotations",
        help=f"CSV of {split} annotations (default: <root>/annotations/annotations_{split}.csv; "
        "root = $SKU110K_ROOT or ~/Documents/SKU110K).",
        default=None,
    )
    csv.add_argument(
        "--classes",
        help="CSV mapping class names to ids (default: object,0).",
        default=config.DEFAULT_CLASS_FILE,
    )
    if val_split:
        csv.add_argument(
            "--val-annotations",
            default=None,
            help=f"CSV of {val_split} annotations for a validation loss after each epoch (default: "
            f"<root>/annotations/annotations_{val_split}.csv when it exists; '' to disable).",
        )
        csv.add_argument("--base_dir", default=None, help="Image folder (default: <root>/images).")
    return csv


def add_backbone_arg(parser, help="Backbone (resnet50/101/152)."):
    """``--backbone`` (default resnet50)."""
    parser.add_argument("--backbone", default="resnet50", help=help)


def add_gpu_arg(parser, help="GPU id(s) to use (sets CUDA_VISIBLE_DEVICES)."):
    """``--gpu``, the GPU(s) ``utils.runtime.setup_devices`` selects."""
    parser.add_argument("--gpu", help=help)


def add_score_threshold_arg(parser):
    """``--score-threshold``: anchors with a hard score above it reach the merger (B17)."""
    parser.add_argument(
        "--score-threshold",
        type=float,
        default=config.PredictConfig.score_threshold,
        help="Keep anchors with hard score above this (default %(default)s; "
        "now applied in the graph, B17).",
    )


def add_image_size_args(parser):
    """``--image-min-side`` and ``--image-max-side``: the resize of every image (§8.4)."""
    parser.add_argument(
        "--image-min-side",
        type=int,
        default=config.TrainConfig.image_min_side,
        help="Rescale so the shorter side is this long (default %(default)s).",
    )
    parser.add_argument(
        "--image-max-side",
        type=int,
        default=config.TrainConfig.image_max_side,
        help="... unless the longer side would exceed this (default %(default)s).",
    )


# --------------------------------------------------------------------------------------------- #
# Training flags
# --------------------------------------------------------------------------------------------- #
def add_weights_args(parser, stage: Stage):
    """``--snapshot`` and the stage's initial-weights flags, mutually exclusive."""
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--snapshot", help="Resume training from a snapshot of this stage.")
    if stage.imagenet_init:
        weights.add_argument(
            "--imagenet-weights",
            nargs="?",
            const=True,
            default=True,
            metavar="PATH",
            help="Initialise the backbone with fizyr's ImageNet weights (the default; downloaded "
            "and md5-checked). Pass a local PATH when offline.",
        )
    weights.add_argument("--weights", help=stage.weights_help)
    if stage.imagenet_init:
        weights.add_argument(
            "--no-weights",
            dest="imagenet_weights",
            action="store_const",
            const=False,
            help="Start from random weights (BatchNorm then learns by default).",
        )
    else:
        parser.set_defaults(imagenet_weights=False)


def add_common_train_args(parser, stage: Stage):
    """Every training flag of the original (§4.1) plus --lr, --workers, --mixed-precision."""
    add_weights_args(parser, stage)
    add_backbone_arg(parser)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=config.TrainConfig.batch_size,
        help="Images per batch (default %(default)s).",
    )
    add_gpu_arg(parser)
    parser.add_argument(
        "--multi-gpu",
        type=int,
        default=0,
        help="Train data-parallel on this many GPUs (tf.distribute.MirroredStrategy).",
    )
    parser.add_argument(
        "--multi-gpu-force",
        action="store_true",
        help="Accepted for compatibility; no longer needed.",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=config.TrainConfig.epochs,
        help="Number of epochs (default %(default)s).",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=config.TrainConfig.steps,
        help="Steps per epoch (default %(default)s).",
    )
    parser.add_argument(
        "--snapshot-path",
        default=None,
        help="Folder for snapshots; a timestamp sub-folder is added (default: <root>/snapshot).",
    )
    parser.add_argument(
        "--tensorboard-dir",
        default=None,
        help="TensorBoard log folder; a timestamp sub-folder is added "
        "(default: <root>/logs; '' disables).",
    )
    parser.add_argument(
        "--no-snapshots", dest="snapshots", action="store_false", help="Do not save snapshots."
    )
    parser.add_argument(
        "--no-evaluation",
        dest="evaluation",
        action="store_false",
        help="Accepted for compatibility (no effect, as in the original).",
    )
    parser.add_argument("--freeze-backbone", action="store_true", help="Freeze the ResNet layers.")
    parser.add_argument(
        "--freeze-bn",
        choices=("auto", "yes", "no"),
        default="auto",
        help="Freeze BatchNorm (yes, the original) or let it learn (no). auto: "
        "frozen when starting from pretrained weights, learning with --no-weights.",
    )
    parser.add_argument(
        "--freeze-bn-after",
        type=int,
        default=None,
        metavar="N",
        help="With BatchNorm learning (--freeze-bn no): after N epochs, measure its population "
        "statistics on --bn-images training images and freeze them for the remaining epochs, so "
        "the network adapts to the statistics it will have at inference (the from-scratch "
        "recipe; docs/training-from-scratch.md).",
    )
    parser.add_argument(
        "--bn-images",
        type=int,
        default=100,
        help="Training images (batches) for --freeze-bn-after (default %(default)s).",
    )
    parser.add_argument(
        "--random-transform",
        action="store_true",
        help="Full random affine augmentation (a horizontal flip is always on).",
    )
    parser.add_argument(
        "--no-flip",
        dest="flip",
        action="store_false",
        help="Disable the default random horizontal flip.",
    )
    add_image_size_args(parser)
    parser.add_argument(
        "--lr",
        type=float,
        default=config.TrainConfig.learning_rate,
        help="Adam learning rate (default %(default)s, the original's; from "
        "scratch 1e-4 trains far faster).",
    )
    parser.add_argument(
        "--lr-schedule",
        choices=("plateau", "cosine"),
        default="plateau",
        help="plateau (default, the original's): divide the learning rate by 10 when the "
        "training loss stalls for 2 epochs. cosine: linear warm-up over --warmup-steps, then a "
        "cosine decay to 0 at the last step (the from-scratch recipe of the demo).",
    )
    parser.add_argument(
        "--warmup-steps",
        type=int,
        default=0,
        help="Steps of linear learning-rate warm-up from 0 (--lr-schedule cosine; default 0).",
    )
    parser.add_argument(
        "--clipnorm",
        type=float,
        default=config.TrainConfig.clipnorm,
        help="Adam gradient-norm clip (default %(default)s; 0 disables).",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="Data-loading workers (keras PyDataset; default %(default)s).",
    )
    parser.add_argument(
        "--multiprocessing",
        action="store_true",
        help="Use processes instead of threads for the data workers.",
    )
    parser.add_argument(
        "--mixed-precision",
        action="store_true",
        help="float16 compute with float32 outputs (GPUs with tensor cores).",
    )
    parser.add_argument(
        "--xla",
        action="store_true",
        help="Compile train steps with XLA (fixed image sizes only: XLA recompiles "
        "for every new input shape).",
    )
    parser.add_argument("--seed", type=int, default=None, help="Seed for shuffling/augmentation.")
    parser.add_argument(
        "--verbose",
        type=int,
        default=1,
        choices=(0, 1, 2),
        help="Keras progress output (1 = progress bar).",
    )


def parse_train_args(stage: Stage, argv=None, description=None):
    """Parse and check a training command line (``argv`` default: ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_train_args(parser, stage)
    add_csv_subparser(parser, "train", val_split="val")
    args = parser.parse_args(argv)
    return check_train_args(parser, args, stage)


def _resolve_default(value, default):
    return paths.resolve_path(value) if value else default


def check_train_args(parser, args, stage: Stage):
    """Reject contradictions and fill the root-relative defaults before TensorFlow starts.

    Files are checked for existence only. ``--freeze-bn auto`` with ``--snapshot`` leaves
    ``args.freeze_bn`` None: the snapshot's own mode, which the driver reads when it opens the file.
    """
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1.")
    if args.epochs < 1 or args.steps < 1:
        parser.error("--epochs and --steps must be at least 1.")
    if args.multi_gpu > 1 and args.batch_size < args.multi_gpu:
        parser.error(
            f"--batch-size ({args.batch_size}) must be at least --multi-gpu ({args.multi_gpu}): "
            "each GPU needs one image per step."
        )
    if args.warmup_steps < 0 or args.warmup_steps >= args.epochs * args.steps:
        parser.error("--warmup-steps must be >= 0 and less than --epochs x --steps.")
    if args.warmup_steps and args.lr_schedule != "cosine":
        parser.error("--warmup-steps needs --lr-schedule cosine.")
    try:
        cluster = tf_config().get("cluster", {})
    except ValueError as exc:
        parser.error(f"TF_CONFIG is not valid JSON: {exc}")
    workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
    if args.batch_size < workers:
        parser.error(
            f"--batch-size ({args.batch_size}) must be at least the number of workers in "
            f"TF_CONFIG ({workers}): it is the global batch, split across the workers."
        )
    if args.image_min_side < 32 or args.image_max_side < args.image_min_side:
        parser.error("need 32 <= --image-min-side <= --image-max-side.")
    if stage.needs_weights and not args.weights and not args.snapshot:
        parser.error(  # B20: the original crashed with a TypeError on None
            f"{stage.script} needs the stage-1 model: pass --weights PATH (a "
            "resnet50_csv_NN.weights.h5 "
            "from train.py, or the original's .h5) before the word 'csv', or --snapshot to resume."
        )
    for flag in ("snapshot", "weights"):
        value = getattr(args, flag, None)
        if value:
            value = paths.resolve_path(value)
            if not os.path.isfile(value):
                parser.error(f"--{flag}: file not found: {value}")
            setattr(args, flag, value)
    if isinstance(args.imagenet_weights, str):
        args.imagenet_weights = paths.resolve_path(args.imagenet_weights)
        if not os.path.isfile(args.imagenet_weights):
            parser.error(f"--imagenet-weights: file not found: {args.imagenet_weights}")

    args.annotations = _resolve_default(
        args.annotations, os.path.join(paths.annotation_path(), "annotations_train.csv")
    )
    if not os.path.isfile(args.annotations):
        parser.error(
            f"training annotations not found: {args.annotations} (pass csv --annotations PATH, or "
            "set SKU110K_ROOT to a folder with annotations/ and images/; `sku110k-synth` makes "
            "one)."
        )
    args.base_dir = _resolve_default(args.base_dir, paths.image_path())
    if not os.path.isdir(args.base_dir):
        parser.error(f"image folder not found: {args.base_dir} (pass csv --base_dir DIR).")
    args.classes = paths.resolve_path(args.classes)
    if args.val_annotations is None:  # B22: validation is optional
        default_val = os.path.join(paths.annotation_path(), "annotations_val.csv")
        args.val_annotations = default_val if os.path.isfile(default_val) else None
    elif args.val_annotations == "":
        args.val_annotations = None
    else:
        args.val_annotations = paths.resolve_path(args.val_annotations)
        if not os.path.isfile(args.val_annotations):
            parser.error(f"--val-annotations: file not found: {args.val_annotations}")
    if args.val_annotations and os.path.getsize(args.val_annotations) == 0:
        print(f"{args.val_annotations} is empty: training without validation.")
        args.val_annotations = None
    args.snapshot_path = _resolve_default(
        args.snapshot_path, os.path.join(paths.root_dir(), "snapshot")
    )
    if args.tensorboard_dir is None:
        args.tensorboard_dir = os.path.join(paths.root_dir(), "logs")
    args.tensorboard_dir = (
        paths.resolve_path(args.tensorboard_dir) if args.tensorboard_dir else None
    )
    if args.freeze_bn == "auto" and args.snapshot:
        args.freeze_bn = None  # resume with the snapshot's own BatchNorm mode
    else:
        if args.freeze_bn == "auto":
            pretrained = bool(args.weights or args.imagenet_weights)
            args.freeze_bn = "yes" if pretrained else "no"
        args.freeze_bn = args.freeze_bn == "yes"
    if args.freeze_bn_after is not None:
        if args.freeze_bn:
            parser.error(FREEZE_BN_AFTER_NEEDS_LEARNING)
        if not 1 <= args.freeze_bn_after < args.epochs:
            parser.error(f"--freeze-bn-after must be within [1, --epochs) = [1, {args.epochs}).")
        if args.bn_images < 1:
            parser.error("--bn-images must be at least 1.")
    return args
