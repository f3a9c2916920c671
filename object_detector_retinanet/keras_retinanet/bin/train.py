#!/usr/bin/env python
"""Stage 1 of SKU-110K: train the base RetinaNet (ResNet50-FPN; regression + classification heads).

Usage (as the original; main options go before the word ``csv``):

    python object_detector_retinanet/keras_retinanet/bin/train.py csv
    python object_detector_retinanet/keras_retinanet/bin/train.py --no-weights --lr 1e-4 \\
        --epochs 10 --steps 500 csv --annotations A.csv --base_dir IMAGES

Defaults follow the original: ImageNet-initialised ResNet50 with frozen BatchNorm, Adam 1e-5 with
clipnorm 1e-3, ReduceLROnPlateau on the training loss, batch 1, images resized to 800/1333, a random
horizontal flip, 150 epochs x 10,000 steps. Data default to $SKU110K_ROOT (or ~/Documents/SKU110K)
with images/ and annotations/annotations_{train,val}.csv. Snapshots
``<snapshot-path>/<stamp>/resnet50_csv_NN.weights.h5`` carry the optimizer state and the epoch, so
``--snapshot`` resumes where training stopped. Next step: ``train_iou.py --weights SNAPSHOT csv``.
"""

import os
import sys

if __name__ == "__main__" and not __package__:  # run as a file: make the package importable
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), *[".."] * 3)))

from object_detector_retinanet.keras_retinanet import config  # noqa: E402
from object_detector_retinanet.keras_retinanet.bin import _common  # noqa: E402


def build(args, num_classes):
    """The stage-1 model; ``--weights`` load into the same model."""
    from object_detector_retinanet.keras_retinanet.models.retinanet import build_retinanet

    model = build_retinanet(
        num_classes,
        backbone=args.backbone,
        freeze_bn=args.freeze_bn,
        freeze_backbone=args.freeze_backbone,
    )
    return model, model


def losses():
    from object_detector_retinanet.keras_retinanet import losses as L

    return {config.REGRESSION: L.smooth_l1(), config.CLASSIFICATION: L.focal()}


def targets_fn(*args, **kwargs):
    from object_detector_retinanet.keras_retinanet.utils.anchors import stage1_targets

    return stage1_targets(*args, **kwargs)


STAGE = _common.Stage(
    name="stage1", doc=__doc__, prefix="", build=build, losses=losses, targets_fn=targets_fn
)


def parse_args(argv=None):
    return _common.parse_train_args(STAGE, argv)


def main(argv=None):
    """Parse ``argv`` (default ``sys.argv[1:]``), train, and return the Keras History."""
    args = parse_args(argv)
    return _common.train(STAGE, args)


if __name__ == "__main__":
    main()
