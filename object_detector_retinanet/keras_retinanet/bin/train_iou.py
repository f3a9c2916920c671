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

from object_detector_retinanet.keras_retinanet.bin import _args  # noqa: E402
from object_detector_retinanet.keras_retinanet.errors import reports_input_errors  # noqa: E402
from object_detector_retinanet.keras_retinanet.training import STAGE2, train  # noqa: E402


def parse_args(argv=None):
    return _args.parse_train_args(STAGE2, argv, description=__doc__)


@reports_input_errors
def main(argv=None):
    """Parse ``argv`` (default ``sys.argv[1:]``), train the IoU head, return the Keras History."""
    return train(STAGE2, parse_args(argv))


if __name__ == "__main__":
    main()
