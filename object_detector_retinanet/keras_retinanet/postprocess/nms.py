"""Plain IoU-NMS as a post-processor: the paper's "& NMS" baselines (Goldman et al., CVPR 2019).

Owns :func:`nms_merge`, which has the merger's interface, so that ``predict --merger nms`` can put
it where the EM-Merger would run. The greedy suppression itself is :mod:`..utils.boxes`'.
NumPy only.
"""

from __future__ import annotations

import numpy as np

from object_detector_retinanet.keras_retinanet.utils.boxes import non_max_suppression

DEFAULT_IOU_THRESHOLD = 0.5  # the usual NMS threshold, as the paper's "& NMS" rows


def nms_merge(
    detections: np.ndarray, image_shape: tuple[int, int], threshold: float | None = None
) -> np.ndarray:
    """Plain IoU-NMS by confidence, with the merger's signature.

    Args:
        detections: (N, 6+) rows [x1, y1, x2, y2, confidence, hard_score, ...].
        image_shape: unused (kept for the merger's signature).
        threshold: IoU at which a lower-confidence box is suppressed (None: 0.5).

    Returns:
        (M, same columns) the kept rows, in input order.
    """
    del image_shape
    if len(detections) == 0:
        return detections
    threshold = DEFAULT_IOU_THRESHOLD if threshold is None else threshold
    keep = non_max_suppression(detections[:, :4], detections[:, 4], threshold, "iou")
    return detections[keep]
