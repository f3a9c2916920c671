"""Which detection a candidate keeps: the EM-Merger's per-object pick rules.

Each candidate (one resolved object, paper §4.2) claims the raw detections whose centres it
contains; the merger outputs one of them unchanged. The original code keeps the one with the best
0.5 * confidence + 0.5 * hard score (``selection="original"``, the default). This module owns that
rule and the port's alternatives (``EmMergerConfig.selection``): "confidence", "hard",
"soft_iou", "consensus" and "candidate_iou". NumPy only.
"""

from __future__ import annotations

import numpy as np

from object_detector_retinanet.keras_retinanet.config import CONFIDENCE, HARD_SCORE, EmMergerConfig
from object_detector_retinanet.keras_retinanet.postprocess.arrays import (
    ragged_arange,
    segment_starts,
)


def soft_scores(rows: np.ndarray, config: EmMergerConfig) -> np.ndarray:
    """The Soft-IoU score of every row: its own column, or recovered from the confidence mix.

    Args:
        rows: (N, 6+) detections [x1, y1, x2, y2, confidence, hard_score, ...].
        config: soft_column and hard_score_rate r (confidence = r * hard + (1 - r) * soft).

    Returns:
        (N,) float64.
    """
    if config.soft_column is not None:
        return rows[:, config.soft_column].astype(np.float64)
    r = config.hard_score_rate
    if r >= 1.0:
        return rows[:, HARD_SCORE].astype(np.float64)
    return (rows[:, CONFIDENCE] - r * rows[:, HARD_SCORE]) / (1.0 - r)


def paired_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of aligned rows of (P, 4) boxes (no +1 term), 0 for an empty union."""
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a + area_b - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def selection_scores(rows, boxes, candidate_boxes, owner, config):
    """Score of every claimed detection under ``config.selection`` (higher wins).

    Args:
        rows: (N, 6+) detections. boxes: (N, 4) their truncated integer boxes.
        candidate_boxes: (M, 4) candidate boxes.
        owner: (N,) candidate of each detection, -1 when unclaimed.
        config: selection, soft_column, hard_score_rate.

    Returns:
        (N,) float64 (-inf for unclaimed detections under the IoU-based rules).
    """
    rule = config.selection
    conf = rows[:, CONFIDENCE].astype(np.float64)
    hard = rows[:, HARD_SCORE].astype(np.float64)
    if rule == "original":
        return 0.5 * conf + 0.5 * hard  # KEEP: = 0.75 hard + 0.25 soft at rate 0.5
    if rule == "confidence":
        return conf
    if rule == "hard":
        return hard
    soft = soft_scores(rows, config)
    if rule == "soft_iou":
        return soft
    claimed = np.flatnonzero(owner >= 0)
    out = np.full(rows.shape[0], -np.inf)
    if rule == "candidate_iou":
        own_box = candidate_boxes[owner[claimed]].astype(np.float64)
        out[claimed] = soft[claimed] * paired_iou(boxes[claimed].astype(np.float64), own_box)
        return out
    # "consensus": sum over the candidate's claimed detections o of soft_o * IoU(t, o).
    by_owner = claimed[np.argsort(owner[claimed], kind="stable")]
    owner_of = owner[by_owner]
    counts = np.bincount(owner_of, minlength=candidate_boxes.shape[0])
    reps = counts[owner_of]
    this = np.repeat(by_owner, reps)
    other = by_owner[np.repeat(segment_starts(counts)[owner_of], reps) + ragged_arange(reps)]
    box = boxes.astype(np.float64)
    value = soft[other] * paired_iou(box[this], box[other])
    out[:] = 0.0
    out += np.bincount(this, weights=value, minlength=rows.shape[0])
    out[owner < 0] = -np.inf
    return out
