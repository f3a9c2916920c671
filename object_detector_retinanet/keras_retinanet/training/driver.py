"""The training driver shared by both stages: generators, optimizer, callbacks, strategy, fit.

:func:`train` builds the :class:`~.stages.Stage`'s model, loads its initial weights (or resumes a
snapshot), compiles it and runs Keras' ``fit`` under the tf.distribute strategy the flags and
``TF_CONFIG`` ask for. Bad input found on the way (an unreadable weights file, an epoch count the
snapshot has already reached, a global batch smaller than the replicas) raises
:class:`~object_detector_retinanet.keras_retinanet.errors.InputError`.

Nothing here imports TensorFlow at module level; :func:`train` imports it after selecting the
devices.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

from object_detector_retinanet import utils as paths
from object_detector_retinanet.keras_retinanet import config
from object_detector_retinanet.keras_retinanet.errors import InputError
from object_detector_retinanet.keras_retinanet.training.distribute import (
    is_chief,
    make_strategy,
    patch_keras_multi_worker,
)
from object_detector_retinanet.keras_retinanet.training.stages import Stage
from object_detector_retinanet.keras_retinanet.utils.runtime import setup_devices, tune_allocator

#: Why --freeze-bn-after cannot be used with BatchNorm frozen from the start.
FREEZE_BN_AFTER_NEEDS_LEARNING = (
    "--freeze-bn-after needs BatchNorm learning: --freeze-bn no (the default with --no-weights)."
)


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


def settle_batches(generator, count, seed=None):
    """``count`` training batches (inputs only) for estimating BatchNorm's statistics: a seeded
    sample of the generator's groups, loaded and augmented as for training."""
    import numpy as np

    order = np.random.default_rng([0 if seed is None else seed, 1]).permutation(len(generator))
    for index in order[: min(count, len(generator))]:
        yield generator[int(index)][0]


def create_callbacks(args, stage: Stage, run_dir_stamp, scratch=None):
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
        ``(callbacks, guard)``: the callback list and the :class:`NonFiniteGuard` that tells
        whether the loss became NaN/inf.
    """
    import keras

    from object_detector_retinanet.keras_retinanet.training.callbacks import (
        NonFiniteGuard,
        Snapshot,
    )

    def run_folder(root, name):
        if scratch:
            return paths.create_folder(os.path.join(scratch, name))
        return paths.create_folder(os.path.join(root, run_dir_stamp))

    guard = NonFiniteGuard()
    callbacks = [guard]
    if args.snapshots:
        folder = run_folder(args.snapshot_path, "snapshot")
        callbacks.append(
            Snapshot(folder, stage, args.backbone, args.freeze_bn, guard, bool(scratch))
        )
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
    return callbacks, guard


def initial_weights_path(args):
    """The file to start from: --weights, a local --imagenet-weights PATH, the downloaded ImageNet
    weights (the default of train.py), or None (--no-weights)."""
    from object_detector_retinanet.keras_retinanet.models.backbone import download_imagenet

    if args.weights:
        return args.weights
    if args.imagenet_weights is True:
        return download_imagenet(args.backbone)
    return args.imagenet_weights or None


def read_resume_attrs(args) -> dict:
    """The metadata of the ``--snapshot`` to resume from (``{}`` without one).

    With ``--freeze-bn auto`` the argument checks leave ``args.freeze_bn`` as None for a resume:
    it becomes the snapshot's own BatchNorm mode here (frozen when the file does not say).

    Raises:
        InputError: the snapshot is not a readable HDF5 file, or ``--freeze-bn-after`` meets a
            snapshot trained with frozen BatchNorm.
    """
    from object_detector_retinanet.keras_retinanet.models.weights import (
        FREEZE_BN_ATTR,
        read_snapshot_attrs,
    )

    if not args.snapshot:
        return {}
    try:
        attrs = read_snapshot_attrs(args.snapshot)
    except OSError as exc:
        raise InputError(
            f"--snapshot {args.snapshot}: not a readable weights file ({exc})"
        ) from exc
    if args.freeze_bn is None:
        stored = attrs.get(FREEZE_BN_ATTR)
        args.freeze_bn = bool(int(stored)) if stored is not None else True
        if args.freeze_bn and args.freeze_bn_after is not None:
            raise InputError(FREEZE_BN_AFTER_NEEDS_LEARNING)
    return attrs


def load_initial_weights(model, path):
    """Load ``path`` by layer name into ``model`` and say how much of the model it covered.

    Raises:
        InputError: the file is not a readable Keras weights file or shares no layer with the model.
    """
    from object_detector_retinanet.keras_retinanet.models.weights import load_weights_by_name

    try:
        report = load_weights_by_name(model, path, skip_mismatch=True)
    except OSError as exc:
        raise InputError(f"{path}: not a readable weights file ({exc})") from exc
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    print(
        f"Loaded {len(report['loaded'])} layers from {path} "
        f"({len(report['missing'])} layers not in the file keep their initial values)."
    )


def train(stage: Stage, args, extra_callbacks=()):
    """Build, (re)load, compile and fit; returns the Keras ``History``.

    ``extra_callbacks`` run after the driver's own (benchmarks time steps with one).

    Raises:
        InputError: an unusable ``--snapshot`` or ``--weights`` file, a snapshot that has already
            reached ``--epochs``, or a global batch smaller than the replicas.
        SystemExit: with a one-line message when the ImageNet weights cannot be downloaded, the
            class map does not suit the stage, or the loss became NaN/inf (earlier snapshots are
            kept).
    """
    tune_allocator()  # before TensorFlow allocates: keep freed buffers for the next step
    resume_attrs = read_resume_attrs(args)
    setup_devices(args.gpu, args.multi_gpu)
    import keras

    from object_detector_retinanet.keras_retinanet.models import batch_norm
    from object_detector_retinanet.keras_retinanet.models.weights import (
        BN_SETTLED_ATTR,
        initial_epoch_of,
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
    if num_classes != 1 and stage.single_class:
        raise SystemExit(  # B24
            f"{args.classes}: {num_classes} classes. The Soft-IoU stage and predict support a "
            "single class (SKU-110K's 'object'); train stage 1 only, or map all classes to one."
        )

    strategy = make_strategy(args.multi_gpu)
    if args.batch_size < strategy.num_replicas_in_sync:
        raise InputError(
            f"--batch-size {args.batch_size} is the global batch, split across "
            f"{strategy.num_replicas_in_sync} replicas (workers x GPUs): pass --batch-size "
            f"{strategy.num_replicas_in_sync} or more."
        )
    with strategy.scope():
        model, weights_target = stage.build(args, num_classes)
        if init_weights:
            load_initial_weights(weights_target, init_weights)
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
            if resume_attrs.get(BN_SETTLED_ATTR):
                batch_norm.set_frozen(model, True)  # BatchNorm had been settled (--freeze-bn-after)
            initial_epoch = initial_epoch_of(args.snapshot)
            print(f"Resuming from {args.snapshot} after epoch {initial_epoch}.")
    if initial_epoch >= args.epochs:
        raise InputError(
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
        callbacks, guard = create_callbacks(args, stage, paths.safe_timestamp(), scratch_dir)
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
