"""The two training stages of SKU-110K as data: what each builds, learns and needs (§4.1, §4.2).

Stage 1 trains the base RetinaNet (regression + classification heads); stage 2 trains only the
Soft-IoU head on top of a frozen stage-1 network. Everything else (flags, generators, callbacks,
the fit loop) is shared and reads what differs from a :class:`Stage`.

Nothing here imports TensorFlow at module level: the command lines import this module while
parsing their arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from object_detector_retinanet.keras_retinanet import config


@dataclass(frozen=True)
class Stage:
    """What distinguishes stage 1 from stage 2."""

    name: str  # stored in the snapshots' metadata: "stage1" | "stage2"
    script: str  # the command line that trains it, for messages
    prefix: str  # snapshot file prefix: "" or "iou_"
    weights_help: str  # help of --weights
    imagenet_init: bool  # offers --imagenet-weights (the default) and --no-weights
    needs_weights: bool  # --weights or --snapshot is required (B20)
    single_class: bool  # a class map of more than one class is rejected (B24)
    build: Callable  # build(args, num_classes) -> (training model, model to load --weights into)
    losses: Callable  # losses() -> dict for compile
    targets_fn: Callable  # generator targets function


def build_stage1(args, num_classes):
    """The stage-1 model; ``--weights`` load into the same model."""
    from object_detector_retinanet.keras_retinanet.models.retinanet import build_retinanet

    model = build_retinanet(
        num_classes,
        backbone=args.backbone,
        freeze_bn=args.freeze_bn,
        freeze_backbone=args.freeze_backbone,
    )
    return model, model


def build_stage2(args, num_classes):
    """Stage-1 graph + a fresh IoU head; ``--weights`` load by name into it (IoU layers too, when
    the file has them, as the original's ``by_name`` load did); then the stage-2 training model."""
    from object_detector_retinanet.keras_retinanet.models.retinanet import build_retinanet
    from object_detector_retinanet.keras_retinanet.models.soft_iou import (
        add_iou_head,
        retinanet_iou,
    )

    base = build_retinanet(num_classes, backbone=args.backbone, freeze_bn=True)
    model = add_iou_head(base, num_classes)
    return retinanet_iou(model), model


def stage1_losses():
    """Smooth L1 on the box regression (§7.2), focal loss on the classification (§7.1)."""
    from object_detector_retinanet.keras_retinanet import losses

    return {config.REGRESSION: losses.smooth_l1(), config.CLASSIFICATION: losses.focal()}


def stage2_losses():
    """The Soft-IoU loss on the stage-2 output (§7.3)."""
    from object_detector_retinanet.keras_retinanet import losses

    return {config.IOU_REGRESSION_OUTPUT: losses.soft_iou()}


def stage1_targets(*args, **kwargs):
    """:func:`utils.anchors.stage1_targets`, imported when the generator first calls it."""
    from object_detector_retinanet.keras_retinanet.utils import anchors

    return anchors.stage1_targets(*args, **kwargs)


def stage2_targets(*args, **kwargs):
    """:func:`utils.anchors.stage2_targets`, imported when the generator first calls it."""
    from object_detector_retinanet.keras_retinanet.utils import anchors

    return anchors.stage2_targets(*args, **kwargs)


STAGE1 = Stage(
    name="stage1",
    script="train.py",
    prefix="",
    weights_help="Initialise the model from a weights file (by name).",
    imagenet_init=True,
    needs_weights=False,
    single_class=False,
    build=build_stage1,
    losses=stage1_losses,
    targets_fn=stage1_targets,
)

STAGE2 = Stage(
    name="stage2",
    script="train_iou.py",
    prefix="iou_",
    weights_help="Stage-1 weights to start from (required unless --snapshot): one of our "
    "resnet50_csv_NN.weights.h5 files or an original Keras-2 .h5, loaded by layer name.",
    imagenet_init=False,
    needs_weights=True,
    single_class=True,
    build=build_stage2,
    losses=stage2_losses,
    targets_fn=stage2_targets,
)
