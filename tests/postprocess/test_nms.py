"""Tests of postprocess/nms.py: plain IoU-NMS with the merger's interface (``--merger nms``)."""

import numpy as np

from object_detector_retinanet.keras_retinanet.postprocess.nms import nms_merge


def test_nms_merge_keeps_the_most_confident_of_overlapping_boxes():
    rows = np.array(
        [
            [0, 0, 10, 10, 0.6, 0.6],
            [1, 0, 11, 10, 0.9, 0.9],  # IoU with row 0 = 9*10 / (100 + 100 - 90) = 0.818 -> wins
            [20, 0, 30, 10, 0.5, 0.5],  # no overlap -> kept
        ]
    )
    np.testing.assert_array_equal(nms_merge(rows, (40, 40)), rows[[1, 2]])
    assert nms_merge(rows[:0], (40, 40)).shape == (0, 6)
