"""Vectorised array helpers shared by the post-processing steps.

Owns the few ragged-array idioms the EM-Merger (Goldman et al., CVPR 2019, §4) needs to treat all
regions of an image at once instead of looping over them: ragged ranges, contiguous segments,
per-segment medians and a point-in-rectangle join. A *segment* here is a run of consecutive
entries sharing an id (the members of one region, the pairs of one member). NumPy only.
"""

from __future__ import annotations

import numpy as np


def ragged_arange(counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(c)`` for every ``c`` in ``counts``.

    Args:
        counts: (S,) non-negative integers.

    Returns:
        (sum(counts),) int64, e.g. ``[2, 0, 3] -> [0, 1, 0, 1, 2]``.
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    return np.arange(total, dtype=np.int64) - np.repeat(segment_starts(counts), counts)


def segment_starts(counts: np.ndarray) -> np.ndarray:
    """First position of every segment when segments of these lengths are laid end to end.

    Args:
        counts: (S,) segment lengths.

    Returns:
        (S,) int64 exclusive cumulative sum.
    """
    counts = np.asarray(counts, dtype=np.int64)
    return np.cumsum(counts) - counts


def segment_median(values: np.ndarray, segment: np.ndarray, n_segments: int) -> np.ndarray:
    """Median of ``values`` per segment id, NaN for empty segments (pandas' median semantics).

    Args:
        values: (P,) float values.
        segment: (P,) segment id of every value, in any order.
        n_segments: S, the number of segment ids.

    Returns:
        (S,) float64 medians (the mean of the two middle values for an even count).
    """
    out = np.full(n_segments, np.nan)
    if values.size == 0:
        return out
    order = np.lexsort((values, segment))
    sorted_values = values[order]
    counts = np.bincount(segment[order], minlength=n_segments)
    starts = segment_starts(counts)
    has = counts > 0
    lower = starts + (counts - 1) // 2
    upper = starts + counts // 2
    out[has] = 0.5 * (sorted_values[lower[has]] + sorted_values[upper[has]])
    return out


def points_in_rects(px: np.ndarray, py: np.ndarray, rects: np.ndarray):
    """All (rectangle, point) pairs with the point inside the rectangle, bounds inclusive.

    Uniform-grid bucketing, so the cost grows with the number of nearby pairs, not P x R.

    Args:
        px: (P,) point x coordinates.
        py: (P,) point y coordinates.
        rects: (R, 4) inclusive bounds (x1, y1, x2, y2).

    Returns:
        (rect_index (M,), point_index (M,)) int64, sorted by rectangle, then point.
    """
    px = np.asarray(px, dtype=np.float64)
    py = np.asarray(py, dtype=np.float64)
    rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
    empty = np.zeros(0, dtype=np.int64)
    if px.size == 0 or rects.shape[0] == 0:
        return empty, empty
    extent = np.maximum(rects[:, 2] - rects[:, 0], rects[:, 3] - rects[:, 1])
    cell = max(1.0, float(np.median(extent)))
    x0, y0 = float(px.min()), float(py.min())
    point_col = np.floor((px - x0) / cell).astype(np.int64)
    point_row = np.floor((py - y0) / cell).astype(np.int64)
    n_cols = int(point_col.max()) + 1
    n_rows = int(point_row.max()) + 1
    point_cell = point_row * n_cols + point_col
    by_cell = np.argsort(point_cell, kind="stable")
    sorted_cells = point_cell[by_cell]

    def cell_span(lo, hi, origin, n):  # first and last grid index a rectangle side covers
        first = np.clip(np.floor((lo - origin) / cell), 0, n - 1).astype(np.int64)
        last = np.clip(np.floor((hi - origin) / cell), -1, n - 1).astype(np.int64)
        return first, last

    col_first, col_last = cell_span(rects[:, 0], rects[:, 2], x0, n_cols)
    row_first, row_last = cell_span(rects[:, 1], rects[:, 3], y0, n_rows)
    # One band per (rectangle, grid row): the points of cells col_first..col_last in that row
    # are one contiguous run of the cell-sorted points.
    n_bands = np.where(col_last >= col_first, np.maximum(row_last - row_first + 1, 0), 0)
    band_rect = np.repeat(np.arange(rects.shape[0]), n_bands)
    band_row = row_first[band_rect] + ragged_arange(n_bands)
    lo = np.searchsorted(sorted_cells, band_row * n_cols + col_first[band_rect], side="left")
    hi = np.searchsorted(sorted_cells, band_row * n_cols + col_last[band_rect], side="right")
    run = hi - lo
    pair_rect = np.repeat(band_rect, run)
    pair_point = by_cell[np.repeat(lo, run) + ragged_arange(run)]
    r = rects[pair_rect]
    x, y = px[pair_point], py[pair_point]
    inside = (r[:, 0] <= x) & (x <= r[:, 2]) & (r[:, 1] <= y) & (y <= r[:, 3])
    pair_rect, pair_point = pair_rect[inside], pair_point[inside]
    order = np.argsort(pair_rect * px.size + pair_point)  # unique keys: (rectangle, point)
    return pair_rect[order], pair_point[order]


def pairs_within_segments(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (i, j), i < j, of entries in the same segment, segments laid end to end.

    Args:
        counts: (S,) segment lengths.

    Returns:
        (first (P,), second (P,)) int64 entry indices, ordered by first, then second (row-major
        upper triangle of each segment, segments in order).
    """
    counts = np.asarray(counts, dtype=np.int64)
    segment = np.repeat(np.arange(counts.size), counts)
    later = segment_starts(counts)[segment] + counts[segment] - np.arange(segment.size) - 1
    first = np.repeat(np.arange(segment.size), later)
    return first, first + 1 + ragged_arange(later)
