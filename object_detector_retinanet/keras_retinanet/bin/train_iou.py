#!/usr/bin/env python
"""Stage 2 of SKU-110K: train the Soft-IoU head on top of a frozen stage-1 RetinaNet.

Usage (as the original; main options go before the word ``csv``):

    python object_detector_retinanet/keras_retinanet/bin/train_iou.py \\
        --weights SNAPSHOT_DIR/resnet50_csv_10.weights.h5 csv

``--weights`` (required) is a stage-1 snapshot of ours or an original Keras-2 ``.h5``, loaded by
layer name; the Soft-IoU head (every layer named ``*iou*``) starts fresh and is the only part that
learns. Its loss is the binary cross-entropy between the predicted Soft-IoU and the true IoU of
each positive anchor's decoded box with its object, over anchors whose objectness exceeds 0.1
(paper §3.1). Snapshots ``iou_resnet50_csv_NN.weights.h5`` hold the whole network and load
directly in ``predict.py``; ``--snapshot`` resumes stage 2 with its optimizer state and epoch.
Every other flag is train.py's.
"""

import os
import sys

if __name__ == "__main__" and not __package__:  # run as a file: make the package importable
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), *[".."] * 3)))

from object_detector_retinanet.keras_retinanet import config  # noqa: E402
from object_detector_retinanet.keras_retinanet.bin import _common  # noqa: E402


def build(args, num_classes):
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


def losses():
    from object_detector_retinanet.keras_retinanet import losses as L

    return {config.IOU_REGRESSION_OUTPUT: L.soft_iou()}


def targets_fn(*args, **kwargs):
    from object_detector_retinanet.keras_retinanet.utils.anchors import stage2_targets

    return stage2_targets(*args, **kwargs)


STAGE = _common.Stage(
    name="stage2", doc=__doc__, prefix="iou_", build=build, losses=losses, targets_fn=targets_fn
)


def parse_args(argv=None):
    return _common.parse_train_args(STAGE, argv)


def main(argv=None):
    """Parse ``argv`` (default ``sys.argv[1:]``), train the IoU head, return the Keras History."""
    args = parse_args(argv)
    return _common.train(STAGE, args)


if __name__ == "__main__":
    main()
