"""Axis-aligned box geometry in NumPy: areas, IoU, IoMin and greedy NMS.

Owns the pairwise overlap measures used by target assignment (§6.1, IoU without the +1 pixel
term) and the greedy suppression used by the EM-Merger's final and fallback NMS passes (§10.8,
Goldman et al., CVPR 2019, §4: the merger ends with a light NMS). Boxes are ``(x1, y1, x2, y2)`` in
pixels throughout; a box whose ``x2 < x1`` or ``y2 < y1`` has area 0.

NumPy only : no Keras or TensorFlow imports.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "box_area",
    "compute_iomin",
    "compute_overlap",
    "non_max_suppression",
    "paired_overlap",
]

_OVERLAP_KINDS = ("iomin", "iou")
_ROW_CHUNK = 2048  # rows per block in the pairwise functions: bounds the temporaries' memory
# The pair-list NMS is used while the candidate pairs number at most _PAIRS_PER_BOX * N +
# _PAIRS_FREE (sparse scenes such as the merger's final pass); denser inputs use the per-kept-box
# window loop, which is faster there (same result either way).
_PAIRS_PER_BOX = 24
_PAIRS_FREE = 2000


def _as_boxes(boxes: np.ndarray, name: str) -> np.ndarray:
    """Return ``boxes`` as a float64 ``(N, 4)`` array, or raise a ValueError naming the argument."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4) as (x1, y1, x2, y2), got {arr.shape}")
    return arr


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Areas of boxes, ``(x2 - x1) * (y2 - y1)`` with no +1 term (§6.1).

    Args:
        boxes: ``(N, 4)`` boxes ``(x1, y1, x2, y2)`` in pixels.

    Returns:
        ``(N,)`` float64 areas; degenerate (inverted) sides count as 0.
    """
    b = _as_boxes(boxes, "boxes")
    return np.maximum(b[:, 2] - b[:, 0], 0.0) * np.maximum(b[:, 3] - b[:, 1], 0.0)


def _intersection(b: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Broadcast intersection areas of ``b (n, 1, 4)``-like and ``q (1, k, 4)``-like coordinates.

    The one formula every overlap in this module uses, so the NMS and the pairwise matrices agree
    bit for bit.
    """
    iw = np.minimum(b[..., 2], q[..., 2]) - np.maximum(b[..., 0], q[..., 0])
    ih = np.minimum(b[..., 3], q[..., 3]) - np.maximum(b[..., 1], q[..., 1])
    return np.maximum(iw, 0.0) * np.maximum(ih, 0.0)


def _iou_from(inter: np.ndarray, area_a: np.ndarray, area_b: np.ndarray) -> np.ndarray:
    union = area_a + area_b - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0.0, inter / np.where(union > 0.0, union, 1.0), 0.0)


def _iomin_from(inter: np.ndarray, area_a: np.ndarray, area_b: np.ndarray) -> np.ndarray:
    smaller = np.minimum(area_a, area_b)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(smaller > 0.0, inter / np.where(smaller > 0.0, smaller, 1.0), 0.0)


def _pairwise(boxes: np.ndarray, query_boxes: np.ndarray, combine) -> np.ndarray:
    b = _as_boxes(boxes, "boxes")
    q = _as_boxes(query_boxes, "query_boxes")
    out = np.zeros((b.shape[0], q.shape[0]), dtype=np.float64)
    if out.size == 0:
        return out
    area_b = box_area(b)
    area_q = box_area(q)[None, :]
    qq = q[None, :, :]
    for start in range(0, b.shape[0], _ROW_CHUNK):
        stop = min(start + _ROW_CHUNK, b.shape[0])
        inter = _intersection(b[start:stop, None, :], qq)
        out[start:stop] = combine(inter, area_b[start:stop, None], area_q)
    return out


def compute_overlap(boxes: np.ndarray, query_boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of every box with every query box (§6.1: no +1 term).

    Args:
        boxes: ``(N, 4)`` boxes ``(x1, y1, x2, y2)``.
        query_boxes: ``(K, 4)`` boxes ``(x1, y1, x2, y2)``.

    Returns:
        ``(N, K)`` float64 IoU; 0 where the union is 0 (two empty boxes).
    """
    return _pairwise(boxes, query_boxes, _iou_from)


def compute_iomin(boxes: np.ndarray, query_boxes: np.ndarray) -> np.ndarray:
    """Intersection over the smaller of the two areas (the merger's ``maximum_overlap``, §10.8).

    Args:
        boxes: ``(N, 4)`` boxes ``(x1, y1, x2, y2)``.
        query_boxes: ``(K, 4)`` boxes ``(x1, y1, x2, y2)``.

    Returns:
        ``(N, K)`` float64 IoMin; 0 where either area is 0 (KEEP).
    """
    return _pairwise(boxes, query_boxes, _iomin_from)


def paired_overlap(boxes: np.ndarray, other_boxes: np.ndarray) -> np.ndarray:
    """IoU of aligned pairs: ``boxes[i]`` with ``other_boxes[i]``.

    Same arithmetic as :func:`compute_overlap` (so ``paired_overlap(a[i], b[j])`` equals
    ``compute_overlap(a, b)[i, j]`` bit for bit); used by the sparse target assignment.

    Args:
        boxes: ``(P, 4)`` boxes ``(x1, y1, x2, y2)``.
        other_boxes: ``(P, 4)`` boxes ``(x1, y1, x2, y2)``.

    Returns:
        ``(P,)`` float64 IoU; 0 where the union is 0.
    """
    a = _as_boxes(boxes, "boxes")
    b = _as_boxes(other_boxes, "other_boxes")
    if a.shape != b.shape:
        raise ValueError(f"paired_overlap needs equal shapes, got {a.shape} and {b.shape}")
    return _iou_from(_intersection(a, b), box_area(a), box_area(b))


def non_max_suppression(
    boxes: np.ndarray, scores: np.ndarray, threshold: float, overlap: str = "iomin"
) -> np.ndarray:
    """Greedy best-first NMS; returns the kept indices in their original (ascending) order.

    The highest-scoring unsuppressed box is kept and every lower-ranked box whose overlap with it
    is ``>= threshold`` is suppressed; repeat until no box is left. Every remaining box is compared
    (B11: the original stopped as soon as exactly one box was left, so that box always survived).
    Ties in score are ranked by original index: the lower index is taken first.

    No ``(N, N)`` matrix is ever built. Sparse inputs (few boxes whose x- or y-intervals intersect,
    such as the merger's final pass): the overlaps of all intersecting pairs are computed in one
    vectorised pass and the greedy walk visits only boxes that suppress something. Dense inputs
    (raw shelves of 2k-20k detections): one vectorised comparison per kept box, restricted to the
    boxes whose x-interval can intersect it. Both equal brute-force greedy NMS on the full matrix.

    Args:
        boxes: ``(N, 4)`` boxes ``(x1, y1, x2, y2)`` in pixels.
        scores: ``(N,)`` scores; higher is better.
        threshold: suppress when overlap ``>= threshold`` (the merger uses 0.3 with IoMin).
        overlap: ``"iomin"`` (QUIRK: intersection / min area, the original merger's measure, with
            0 for zero-area boxes) or ``"iou"``.

    Returns:
        ``(K,)`` int64 indices of the kept boxes, ascending (KEEP: original row order, §10.8).

    Raises:
        ValueError: on a bad shape, mismatched lengths or an unknown ``overlap``.
    """
    if overlap not in _OVERLAP_KINDS:
        raise ValueError(f"overlap must be one of {_OVERLAP_KINDS}, got {overlap!r}")
    combine = _iomin_from if overlap == "iomin" else _iou_from
    b = _as_boxes(boxes, "boxes")
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.shape[0] != b.shape[0]:
        raise ValueError(f"scores has {s.shape[0]} entries but boxes has {b.shape[0]} rows")
    n = b.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-s, kind="stable")  # best first; ties: lower index first
    if threshold <= 0.0:
        # Every overlap (even 0 between disjoint boxes) is >= threshold: only the best survives.
        return order[:1].astype(np.int64)

    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    area = box_area(b)
    kept = _nms_by_pairs(b, area, rank, order, threshold, combine)
    if kept is not None:
        return kept
    return _nms_by_windows(b, area, rank, order, threshold, combine)


def _nms_by_pairs(b, area, rank, order, threshold, combine):
    """Greedy NMS from the list of overlapping candidate pairs (threshold > 0).

    Only pairs whose intervals intersect along the sweep axis (x or y, whichever gives fewer
    pairs) can overlap (``lo_q >= hi_p`` gives an intersection side <= 0 exactly, in floating
    point too), so every overlap that can reach a threshold > 0 is computed in one vectorised pass
    (same formula, so bit for bit the values of the brute-force matrix); the greedy walk then only
    visits boxes that suppress something. Returns None when there are too many candidate pairs
    (the caller then uses :func:`_nms_by_windows`).
    """
    n = b.shape[0]
    best = None
    for axis in (0, 1):
        srt_ = np.argsort(b[:, axis], kind="stable")
        lo_s = b[srt_, axis]
        hi = np.searchsorted(lo_s, b[srt_, axis + 2], side="left")  # later boxes with lo < hi_p
        cnt_ = np.maximum(hi - np.arange(n) - 1, 0)
        tot = int(cnt_.sum())
        if best is None or tot < best[0]:
            best = (tot, srt_, cnt_)
    total, by_lo, cnt = best
    if total > _PAIRS_PER_BOX * n + _PAIRS_FREE:
        return None
    keep_mask = np.ones(n, dtype=bool)
    if total:
        starts = np.cumsum(cnt) - cnt
        p = np.repeat(np.arange(n), cnt)
        q = p + 1 + (np.arange(total) - np.repeat(starts, cnt))
        p, q = by_lo[p], by_lo[q]
        ov = combine(_intersection(b[p], b[q]), area[p], area[q])
        hit = ov >= threshold
        if hit.any():
            p, q = p[hit], q[hit]
            src = np.where(rank[p] < rank[q], p, q)  # the better-ranked box suppresses
            dst = np.where(rank[p] < rank[q], q, p)
            srt = np.argsort(rank[src], kind="stable")
            src, dst = src[srt], dst[srt]
            first = np.flatnonzero(np.r_[True, src[1:] != src[:-1]])
            ends = np.r_[first[1:], src.size].tolist()
            heads = src[first].tolist()
            for u, lo, hi_ in zip(heads, first.tolist(), ends):
                if keep_mask[u]:
                    keep_mask[dst[lo:hi_]] = False
    return np.flatnonzero(keep_mask).astype(np.int64)


def _nms_by_windows(b, area, rank, order, threshold, combine):
    """Greedy NMS, one vectorised comparison per kept box (used when there are too many pairs)."""
    n = b.shape[0]

    # Boxes sorted by x1: any box intersecting box i has x1 in (x1_i - max_w, x2_i).
    by_x1 = np.argsort(b[:, 0], kind="stable")
    bs = b[by_x1]
    xs = bs[:, 0]
    area_s = area[by_x1]
    rank_s = rank[by_x1]
    widths = np.maximum(b[:, 2] - b[:, 0], 0.0)
    max_w = float(widths.max())
    slack = 1e-9 * (max_w + float(np.abs(xs).max()) + 1.0)  # conservative window; exact test below
    lo_all = np.searchsorted(xs, b[:, 0] - max_w - slack, side="left")
    hi_all = np.searchsorted(xs, b[:, 2] + slack, side="right")

    suppressed = np.zeros(n, dtype=bool)  # indexed in x1-sorted positions
    pos_of = np.empty(n, dtype=np.int64)
    pos_of[by_x1] = np.arange(n)
    keep = []
    for i in order.tolist():
        p = pos_of[i]
        if suppressed[p]:
            continue
        keep.append(i)
        lo, hi = lo_all[i], hi_all[i]
        window = bs[lo:hi]
        inter = _intersection(b[i], window)
        ov = combine(inter, area[i], area_s[lo:hi])
        hit = (ov >= threshold) & (rank_s[lo:hi] > rank[i])
        suppressed[lo:hi] |= hit
    return np.sort(np.asarray(keep, dtype=np.int64))
