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

from object_detector_retinanet.keras_retinanet.bin import _args  # noqa: E402
from object_detector_retinanet.keras_retinanet.errors import reports_input_errors  # noqa: E402
from object_detector_retinanet.keras_retinanet.training import STAGE1, train  # noqa: E402


def parse_args(argv=None):
    return _args.parse_train_args(STAGE1, argv, description=__doc__)


@reports_input_errors
def main(argv=None):
    """Parse ``argv`` (default ``sys.argv[1:]``), train, and return the Keras History."""
    return train(STAGE1, parse_args(argv))


if __name__ == "__main__":
    main()
