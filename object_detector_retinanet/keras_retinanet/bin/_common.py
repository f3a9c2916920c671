"""Shared CLI pieces of ``train.py``, ``train_iou.py`` and ``predict.py`` (§4).

The original's ``train_iou.py`` was ``train.py`` with ~24 lines changed. Here the two training
scripts differ only in a :class:`Stage` (model builder, loss, targets function, snapshot prefix and
defaults); argument parsing, checks, generators, callbacks, strategy and the fit loop are shared.

Nothing here imports TensorFlow at module level: arguments are parsed and checked first, so a
mistyped flag fails in a fraction of a second with a message saying what to do.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from typing import Callable

from object_detector_retinanet import utils as paths
from object_detector_retinanet.keras_retinanet import config
from object_detector_retinanet.keras_retinanet.utils.runtime import tune_allocator

DEFAULT_CLASSES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "class_mappings.csv")
SNAPSHOT_RE = re.compile(r"_(\d+)\.weights\.h5$")


# --------------------------------------------------------------------------------------------- #
# Argument parsing
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
        default=DEFAULT_CLASSES,
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


def add_common_train_args(parser, stage: "Stage"):
    """Every training flag of the original (§4.1) plus --lr, --workers, --mixed-precision."""
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--snapshot", help="Resume training from a snapshot of this stage.")
    if stage.name == "stage1":
        weights.add_argument(
            "--imagenet-weights",
            nargs="?",
            const=True,
            default=True,
            metavar="PATH",
            help="Initialise the backbone with fizyr's ImageNet weights (the default; downloaded "
            "and md5-checked). Pass a local PATH when offline.",
        )
        weights.add_argument(
            "--weights", help="Initialise the model from a weights file (by name)."
        )
        weights.add_argument(
            "--no-weights",
            dest="imagenet_weights",
            action="store_const",
            const=False,
            help="Start from random weights (BatchNorm then learns by default).",
        )
    else:
        weights.add_argument(
            "--weights",
            help="Stage-1 weights to start from (required unless --snapshot): one of our "
            "resnet50_csv_NN.weights.h5 files or an original Keras-2 .h5, loaded by layer name.",
        )
        parser.set_defaults(imagenet_weights=False)

    parser.add_argument("--backbone", default="resnet50", help="Backbone (resnet50/101/152).")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=config.TrainConfig.batch_size,
        help="Images per batch (default %(default)s).",
    )
    parser.add_argument("--gpu", help="GPU id(s) to use (sets CUDA_VISIBLE_DEVICES).")
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


def parse_train_args(stage: "Stage", argv):
    parser = argparse.ArgumentParser(
        description=stage.doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_train_args(parser, stage)
    add_csv_subparser(parser, "train", val_split="val")
    args = parser.parse_args(argv)
    return check_train_args(parser, args, stage)


def tf_config():
    """The multi-worker cluster description ``$TF_CONFIG``, parsed (``{}`` when unset)."""
    raw = os.environ.get("TF_CONFIG")
    return json.loads(raw) if raw else {}


def _resolve_default(value, default):
    return paths.resolve_path(value) if value else default


def check_train_args(parser, args, stage: "Stage"):
    """Reject contradictions and fill the root-relative defaults before TensorFlow starts."""
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
    if stage.name == "stage2" and not args.weights and not args.snapshot:
        parser.error(  # B20: the original crashed with a TypeError on None
            "train_iou.py needs the stage-1 model: pass --weights PATH (a "
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
    if args.freeze_bn == "auto" and args.snapshot:  # resume with the snapshot's own BN mode
        from object_detector_retinanet.keras_retinanet.models.weights import read_snapshot_attrs

        stored = read_snapshot_attrs(args.snapshot).get("sku110k_freeze_bn")
        if stored is not None:
            args.freeze_bn = "yes" if int(stored) else "no"
    if args.freeze_bn == "auto":
        pretrained = bool(args.weights or args.imagenet_weights or args.snapshot)
        args.freeze_bn = "yes" if pretrained else "no"
    args.freeze_bn = args.freeze_bn == "yes"
    if args.freeze_bn_after is not None:
        if args.freeze_bn:
            parser.error(
                "--freeze-bn-after needs BatchNorm learning: --freeze-bn no (the default "
                "with --no-weights)."
            )
        if not 1 <= args.freeze_bn_after < args.epochs:
            parser.error(f"--freeze-bn-after must be within [1, --epochs) = [1, {args.epochs}).")
        if args.bn_images < 1:
            parser.error("--bn-images must be at least 1.")
    return args


# --------------------------------------------------------------------------------------------- #
# Runtime set-up (imports TensorFlow)
# --------------------------------------------------------------------------------------------- #
def setup_devices(gpu=None, multi_gpu=0):
    """Select GPUs (CUDA_VISIBLE_DEVICES) and enable memory growth (PORT).

    The original always set CUDA_VISIBLE_DEVICES, to "0" without --gpu; here it is set only when
    --gpu (or --multi-gpu without --gpu) asks, so data-parallel runs see every GPU.
    """
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    elif multi_gpu > 1 and "CUDA_VISIBLE_DEVICES" not in os.environ:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(multi_gpu))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    for device in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(device, True)
        except RuntimeError:  # already initialised (e.g. a second main() call in one process)
            pass


def is_chief():
    """Whether this process writes the run's snapshots and logs (no TensorFlow needed).

    Without ``TF_CONFIG`` there is one process and it is the chief. In a ``TF_CONFIG`` cluster,
    tf.distribute's convention: the task of type ``chief``, else worker 0 when the cluster has no
    ``chief`` entry.
    """
    config = tf_config()
    task = config.get("task") or {}
    kind, index = task.get("type"), int(task.get("index", 0))
    if kind in (None, "chief"):
        return True
    return kind == "worker" and index == 0 and not config.get("cluster", {}).get("chief")


def make_strategy(multi_gpu=0):
    """MultiWorkerMirroredStrategy when TF_CONFIG is set, MirroredStrategy for --multi-gpu N > 1,
    else the default (single-device) strategy."""
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if multi_gpu > 1:
        gpus = tf.config.list_logical_devices("GPU")
        if len(gpus) < multi_gpu:
            raise RuntimeError(
                f"--multi-gpu {multi_gpu} asked for, but only {len(gpus)} GPU(s) visible."
            )
        return tf.distribute.MirroredStrategy([d.name for d in gpus[:multi_gpu]])
    return tf.distribute.get_strategy()


def patch_keras_multi_worker():
    """Make Keras 3's ``fit`` average the logged losses across workers without crashing.

    Under MultiWorkerMirroredStrategy, Keras (3.15 and earlier) averages every step's logs across
    workers with ``strategy.reduce("MEAN", value, axis=0)``, which fails on the scalar losses
    ("Invalid reduction dimension 0 for input with 0 dimensions"). Scalars are averaged with
    ``axis=None`` here; everything else goes to Keras' own function. The averaged loss is the same
    on every worker, so the NaN guard and ReduceLROnPlateau decide alike everywhere. Idempotent.
    """
    import keras
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    original = trainer.reduce_per_replica
    if getattr(original, "sku110k_patched", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        if reduction not in ("auto", "mean") or not multi_worker:
            return original(values, strategy, reduction)

        def mean(value):
            if strategy.experimental_local_results(value)[0].shape.rank == 0:
                return strategy.reduce("MEAN", value, axis=None)
            return original(value, strategy, reduction)

        return keras.tree.map_structure(mean, values)

    reduce_per_replica.sku110k_patched = True
    trainer.reduce_per_replica = reduce_per_replica


def learning_rate(lr, schedule="plateau", warmup_steps=0, total_steps=None):
    """The optimizer's learning rate: ``lr`` itself, or a schedule of the step counter.

    ``schedule="cosine"``: linear from 0 to ``lr`` over ``warmup_steps``, then
    ``lr * (1 + cos(pi * t)) / 2`` with ``t`` going from 0 to 1 at ``total_steps``. The step
    counter is the optimizer's, which snapshots keep, so a resumed run continues the curve.
    ``"plateau"`` keeps a constant rate for ReduceLROnPlateau to lower.
    """
    if schedule != "cosine":
        return lr
    import keras

    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else lr,
        decay_steps=total_steps - warmup_steps,
        warmup_target=lr if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


def make_optimizer(lr, clipnorm, schedule="plateau", warmup_steps=0, total_steps=None):
    """Adam at :func:`learning_rate` with the original's per-variable ``clipnorm`` (0 or None: no
    clipping)."""
    import keras

    rate = learning_rate(lr, schedule, warmup_steps, total_steps)
    return keras.optimizers.Adam(learning_rate=rate, clipnorm=clipnorm or None)


def create_generators(args, targets_fn):
    """Training (and optional validation) generators sharing one class with ``targets_fn``."""
    from object_detector_retinanet.keras_retinanet.preprocessing.csv_generator import CSVGenerator
    from object_detector_retinanet.keras_retinanet.utils.transform import (
        augmenting_transform_generator,
        default_transform_generator,
    )

    if args.random_transform:  # the §8.4 ranges (rotation, translation, shear, scale, flips)
        transform = augmenting_transform_generator(seed=args.seed)
    elif args.flip:  # KEEP: the original flips horizontally even without --random-transform
        transform = default_transform_generator(seed=args.seed)
    else:
        transform = None
    common = dict(
        csv_class_file=args.classes,
        base_dir=args.base_dir,
        targets_fn=targets_fn,
        batch_size=args.batch_size,
        image_min_side=args.image_min_side,
        image_max_side=args.image_max_side,
    )
    train = CSVGenerator(args.annotations, transform_generator=transform, seed=args.seed, **common)
    val = None
    if args.val_annotations:
        val = CSVGenerator(args.val_annotations, shuffle_groups=False, **common)
    return train, val


def fixed_steps(generator, steps, **kwargs):
    """``FixedSteps(generator, steps, **kwargs)``: exactly ``steps`` batches per epoch."""
    from object_detector_retinanet.keras_retinanet.preprocessing.generator import FixedSteps

    return FixedSteps(generator, steps, **kwargs)


def snapshot_name(prefix, backbone, epoch):
    """``{prefix}{backbone}_csv_{epoch:02d}.weights.h5`` (the original's stem + Keras 3 suffix)."""
    return f"{prefix}{backbone}_csv_{epoch:02d}.weights.h5"


def create_callbacks(args, stage: "Stage", run_dir_stamp, scratch=None):
    """Snapshots, TensorBoard, ReduceLROnPlateau and the non-finite-loss guard.

    Args:
        args: the parsed training arguments.
        stage: the training stage (snapshot prefix and name).
        run_dir_stamp: the run's sub-folder name under ``--snapshot-path`` and
            ``--tensorboard-dir``.
        scratch: a temporary folder of a non-chief worker (multi-worker training). Its snapshots
            and logs go there instead of the user's folders, and each snapshot is deleted as soon
            as it is written: the worker still saves, so that every worker runs the same
            operations in the same order, but only the chief's files stay.

    Returns:
        ``(callbacks, guard, snapshot)``: the callback list, the :class:`NonFiniteGuard` and the
        snapshot callback (None with ``--no-snapshots``).
    """
    import keras

    from object_detector_retinanet.keras_retinanet.models import batch_norm
    from object_detector_retinanet.keras_retinanet.models.weights import write_snapshot_attrs

    callbacks = []
    guard = NonFiniteGuard()

    class Snapshot(keras.callbacks.Callback):
        """Save the training model's weights (and optimizer) after every finite epoch."""

        def __init__(self, folder):
            super().__init__()
            self.folder = folder
            self.last = None

        def on_epoch_end(self, epoch, logs=None):
            if guard.diverged:
                return
            path = os.path.join(self.folder, snapshot_name(stage.prefix, args.backbone, epoch + 1))
            self.model.save_weights(path)
            if scratch:
                os.remove(path)
                return
            write_snapshot_attrs(
                path,
                sku110k_epoch=epoch + 1,
                sku110k_stage=stage.name,
                sku110k_backbone=args.backbone,
                sku110k_freeze_bn=int(args.freeze_bn),
                sku110k_bn_settled=int(batch_norm.is_frozen(self.model)),
            )
            self.last = path
            print(f"\nEpoch {epoch + 1:02d}: saved snapshot {path}")

    def run_folder(root, name):
        if scratch:
            return paths.create_folder(os.path.join(scratch, name))
        return paths.create_folder(os.path.join(root, run_dir_stamp))

    snapshot = None
    if args.snapshots:
        snapshot = Snapshot(run_folder(args.snapshot_path, "snapshot"))
        callbacks.append(snapshot)
    if args.tensorboard_dir:
        log_dir = run_folder(args.tensorboard_dir, "logs")
        callbacks.append(
            keras.callbacks.TensorBoard(log_dir=log_dir, histogram_freq=0, write_graph=True)
        )
    if args.lr_schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="loss",  # QUIRK: the training loss, as the original
                factor=config.TrainConfig.reduce_lr_factor,
                patience=config.TrainConfig.reduce_lr_patience,
                min_delta=config.TrainConfig.reduce_lr_min_delta,
                cooldown=0,
                min_lr=0,
                verbose=1,
            )
        )
    callbacks.insert(0, guard.as_callback())
    return callbacks, guard, snapshot


class NonFiniteGuard:
    """Stops training at the first NaN/inf loss; the snapshot of that epoch is not written.

    It reads the logged loss, which ``fit`` averages over all replicas (and workers), so every
    worker of a multi-worker run stops after the same step.
    """

    def __init__(self):
        self.diverged = False
        self.where = None

    def as_callback(self):
        import keras

        guard = self

        class _Guard(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                loss = (logs or {}).get("loss")
                if loss is not None and not math.isfinite(float(loss)):
                    guard.diverged = True
                    guard.where = batch
                    self.model.stop_training = True

        return _Guard()


# --------------------------------------------------------------------------------------------- #
# The shared training driver
# --------------------------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Stage:
    """What distinguishes stage 1 from stage 2."""

    name: str  # "stage1" | "stage2"
    doc: str  # the script's docstring: usage and recipe (argparse description)
    prefix: str  # snapshot file prefix: "" or "iou_"
    build: Callable  # build(args, num_classes) -> (training model, model to load --weights into)
    losses: Callable  # losses() -> dict for compile
    targets_fn: Callable  # generator targets function


def initial_epoch_of(snapshot_path):
    """The epoch a snapshot ends (from its metadata, else from its ``_NN`` file name)."""
    from object_detector_retinanet.keras_retinanet.models.weights import read_snapshot_attrs

    attrs = read_snapshot_attrs(snapshot_path)
    if "sku110k_epoch" in attrs:
        return int(attrs["sku110k_epoch"])
    match = SNAPSHOT_RE.search(os.path.basename(snapshot_path))
    return int(match.group(1)) if match else 0


def train(stage: Stage, args, extra_callbacks=()):
    """Build, (re)load, compile and fit; returns the Keras ``History``.

    ``extra_callbacks`` run after the driver's own (benchmarks time steps with one).

    Raises:
        SystemExit: with a one-line message when the ImageNet weights cannot be downloaded, the
            class map does not suit the stage, or the loss became NaN/inf (earlier snapshots are
            kept).
    """
    tune_allocator()  # before TensorFlow allocates: keep freed buffers for the next step
    setup_devices(args.gpu, args.multi_gpu)
    import keras

    from object_detector_retinanet.keras_retinanet.models import batch_norm
    from object_detector_retinanet.keras_retinanet.models.weights import (
        load_weights_by_name,
        read_snapshot_attrs,
    )

    try:  # first, so an offline download fails in seconds, not after building the model
        init_weights = None if args.snapshot else initial_weights_path(args)
    except RuntimeError as exc:
        raise SystemExit(f"error: {exc}") from exc

    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    if args.seed is not None:
        keras.utils.set_random_seed(args.seed)

    train_gen, val_gen = create_generators(args, stage.targets_fn)
    print(f"train_size:{train_gen.size()},val_size:{val_gen.size() if val_gen else 0}")
    num_classes = train_gen.num_classes()
    if num_classes != 1 and stage.name == "stage2":
        raise SystemExit(  # B24
            f"{args.classes}: {num_classes} classes. The Soft-IoU stage and predict support a "
            "single class (SKU-110K's 'object'); train stage 1 only, or map all classes to one."
        )

    strategy = make_strategy(args.multi_gpu)
    if args.batch_size < strategy.num_replicas_in_sync:
        raise SystemExit(
            f"error: --batch-size {args.batch_size} is the global batch, split across "
            f"{strategy.num_replicas_in_sync} replicas (workers x GPUs): pass --batch-size "
            f"{strategy.num_replicas_in_sync} or more."
        )
    with strategy.scope():
        model, weights_target = stage.build(args, num_classes)
        if init_weights:
            report = load_weights_by_name(weights_target, init_weights, skip_mismatch=True)
            print(
                f"Loaded {len(report['loaded'])} layers from {init_weights} "
                f"({len(report['missing'])} layers not in the file keep their initial values)."
            )
        model.compile(
            optimizer=make_optimizer(
                args.lr,
                args.clipnorm,
                schedule=args.lr_schedule,
                warmup_steps=args.warmup_steps,
                total_steps=args.epochs * args.steps,
            ),
            loss=stage.losses(),
            # XLA recompiles for every new input shape, and SKU-110K images come in many aspect
            # ratios, so it is opt-in (Keras' "auto" would turn it on whenever a GPU is visible).
            jit_compile=bool(args.xla),
        )
        initial_epoch = 0
        if args.snapshot:
            model.optimizer.build(model.trainable_variables)
            model.load_weights(args.snapshot)
            if read_snapshot_attrs(args.snapshot).get("sku110k_bn_settled"):
                batch_norm.set_frozen(model, True)  # BatchNorm had been settled (--freeze-bn-after)
            initial_epoch = initial_epoch_of(args.snapshot)
            print(f"Resuming from {args.snapshot} after epoch {initial_epoch}.")
    if initial_epoch >= args.epochs:
        raise SystemExit(
            f"{args.snapshot} already finished epoch {initial_epoch}; "
            f"pass --epochs > {initial_epoch}."
        )
    if os.environ.get("TF_CONFIG"):
        patch_keras_multi_worker()
        # Keras' fit would first all-reduce a whole input batch with strategy.reduce to build the
        # model, which MultiWorkerMirroredStrategy rejects; without a strategy of its own, the
        # model takes the one of the enclosing scope and builds when the train step is traced.
        model._distribute_strategy = None
    # Only the chief names a run folder; the other workers write into a scratch folder instead.
    scratch = (
        contextlib.nullcontext()
        if is_chief()
        else tempfile.TemporaryDirectory(prefix="sku110k-worker-", ignore_cleanup_errors=True)
    )
    with strategy.scope(), scratch as scratch_dir:
        callbacks, guard, _ = create_callbacks(args, stage, paths.safe_timestamp(), scratch_dir)
        if args.freeze_bn_after is not None:
            callbacks.append(
                batch_norm.SettleBatchNorm(
                    args.freeze_bn_after,
                    lambda: settle_batches(train_gen, args.bn_images, args.seed),
                )
            )
        history = model.fit(
            fixed_steps(
                train_gen,
                args.steps,
                seed=args.seed,
                initial_epoch=initial_epoch,
                workers=args.workers,
                use_multiprocessing=args.multiprocessing,
            ),
            steps_per_epoch=args.steps,
            epochs=args.epochs,
            initial_epoch=initial_epoch,
            validation_data=(
                fixed_steps(val_gen, len(val_gen), shuffle=False) if val_gen else None
            ),
            validation_steps=len(val_gen) if val_gen else None,
            callbacks=callbacks + list(extra_callbacks),
            verbose=args.verbose,
        )
    if guard.diverged:
        raise SystemExit(
            f"error: training stopped: the loss became NaN/inf at step {guard.where} of the last "
            "epoch. "
            "Snapshots of earlier epochs are kept; lower --lr or keep --clipnorm."
        )
    return history


def settle_batches(generator, count, seed=None):
    """``count`` training batches (inputs only) for estimating BatchNorm's statistics: a seeded
    sample of the generator's groups, loaded and augmented as for training."""
    import numpy as np

    order = np.random.default_rng([0 if seed is None else seed, 1]).permutation(len(generator))
    for index in order[: min(count, len(generator))]:
        yield generator[int(index)][0]


def initial_weights_path(args):
    """The file to start from: --weights, a local --imagenet-weights PATH, the downloaded ImageNet
    weights (the default of train.py), or None (--no-weights)."""
    from object_detector_retinanet.keras_retinanet.models.backbone import download_imagenet

    if args.weights:
        return args.weights
    if args.imagenet_weights is True:
        return download_imagenet(args.backbone)
    return args.imagenet_weights or None
