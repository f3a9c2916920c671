"""EM-Merger: the post-processor that replaces NMS (spec §10; Goldman et al., CVPR 2019, §4).

Owns the whole merger of one image, from raw detections to one kept detection per object:

1. boxes -> shrunk Gaussians (sigma = w/4, h/4) -> heat map -> external contours (§10.2);
2. per contour: members, K estimate, branch (§10.3);
3. collapse of the members' mixture to K components (:mod:`.mog`, §10.4);
4. removal of redundant components by ellipse overlap (§10.5);
5. 2-sigma candidate boxes (§10.6);
6. greedy assignment of detections to candidates and one pick per candidate (§10.7);
7. final IoMin-0.3 suppression (§10.8), via :func:`.boxes.non_max_suppression`.

Every KEEP and QUIRK of the spec is kept (marked ``# QUIRK:``); bugs B2, B9-B15 are fixed (marked
with their number). NumPy/SciPy/OpenCV (plus numba when installed: the agglomerative init of
:mod:`.mog` then runs as a compiled kernel with bit-identical results; ``mog.USE_NUMBA = False``
forces the NumPy path, ``mog.warm_up()`` pays numba's one-time start-up ahead of the first merge);
no file I/O, no globals mutated, deterministic.

Deviation for speed (documented, tested): the heat map is rendered at a reduced resolution. The
original paints a full-resolution float64 map (8 M pixels for a 3264x2448 photo) in a Python loop;
here every reduced pixel holds the exact full-resolution map value at the centre of its s x s block
(point sampling, painted in one sparse product of per-box separable kernels), with s chosen from
the box sizes so that a typical shrunk box spans about ``heat_map_samples_per_box`` samples.
Contour rectangles map back as whole blocks, and contour areas are corrected to the full-resolution
polygon area (:func:`full_resolution_area`). The heat values compared in step 4 are exact
full-resolution values. ``heat_map_downscale=1`` reproduces the full-resolution map exactly.
Known, bounded differences at s > 1 (tests/utils/test_em_merger.py measures them against a
straightforward full-resolution reference): blobs separated by a gap narrower than s px merge into
one contour (its K then covers both), rectangles move by up to s px, and K can flip where
area / median area sits near x.5. scripts/bench_merger.py compares the final outputs.

Other speed measures (same results): the per-contour work is batched over all contours (k = 1
blobs in closed form, the others through :func:`.mog.collapse_batch`), redundancy pairs that are
clear-cut are decided analytically and only borderline pairs are rasterised (each ellipse drawn at
most once, on its own bounding box), assignment and membership use a uniform-grid
point-in-rectangle join, the contour mask is thresholded without materialising the quantised map,
and the final suppression runs on the pair list of the (sparse) picks (:mod:`.boxes`).
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from multiprocessing import get_context

import cv2
import numpy as np
from scipy import sparse
from scipy.stats import chi2

from object_detector_retinanet.keras_retinanet.config import (  # noqa: F401 (re-exported)
    SELECTIONS,
    EmMergerConfig,
)
from object_detector_retinanet.keras_retinanet.utils.boxes import non_max_suppression
from object_detector_retinanet.keras_retinanet.utils.mog import (
    MSG_EM_BUDGET,
    CollapseBudget,
    collapse_batch,
    init_costs,
)

logger = logging.getLogger(__name__)

_DBL_EPSILON = np.finfo(np.float64).eps  # cv2.normalize's "constant input" test


# --------------------------------------------------------------------------------------------
# Small vectorised helpers
# --------------------------------------------------------------------------------------------


def _ragged_arange(counts: np.ndarray) -> np.ndarray:
    """Concatenation of arange(c) for every c in counts."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.cumsum(counts) - counts
    return np.arange(total, dtype=np.int64) - np.repeat(starts, counts)


def points_in_rects(px: np.ndarray, py: np.ndarray, rects: np.ndarray):
    """All (rect, point) pairs with the point inside the rect, bounds inclusive.

    Uniform-grid bucketing, so the cost grows with the number of nearby pairs, not P x R.

    Args:
        px, py: (P,) point coordinates.
        rects: (R, 4) inclusive bounds (x1, y1, x2, y2).

    Returns:
        (rect_idx (M,), point_idx (M,)) int64, sorted by rect, then point.
    """
    px = np.asarray(px, dtype=np.float64)
    py = np.asarray(py, dtype=np.float64)
    rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
    empty = np.zeros(0, dtype=np.int64)
    if px.size == 0 or rects.shape[0] == 0:
        return empty, empty
    ext = np.maximum(rects[:, 2] - rects[:, 0], rects[:, 3] - rects[:, 1])
    cell = max(1.0, float(np.median(ext)))
    x0, y0 = float(px.min()), float(py.min())
    gxp = np.floor((px - x0) / cell).astype(np.int64)
    gyp = np.floor((py - y0) / cell).astype(np.int64)
    ncols = int(gxp.max()) + 1
    nrows = int(gyp.max()) + 1
    cid = gyp * ncols + gxp
    order = np.argsort(cid, kind="stable")
    scid = cid[order]
    cx0 = np.clip(np.floor((rects[:, 0] - x0) / cell), 0, ncols - 1).astype(np.int64)
    cx1 = np.clip(np.floor((rects[:, 2] - x0) / cell), -1, ncols - 1).astype(np.int64)
    cy0 = np.clip(np.floor((rects[:, 1] - y0) / cell), 0, nrows - 1).astype(np.int64)
    cy1 = np.clip(np.floor((rects[:, 3] - y0) / cell), -1, nrows - 1).astype(np.int64)
    nb = np.where(cx1 >= cx0, np.maximum(cy1 - cy0 + 1, 0), 0)
    rr = np.repeat(np.arange(rects.shape[0]), nb)
    band = cy0[rr] + _ragged_arange(nb)
    lo = np.searchsorted(scid, band * ncols + cx0[rr], side="left")
    hi = np.searchsorted(scid, band * ncols + cx1[rr], side="right")
    cnt = hi - lo
    pr = np.repeat(rr, cnt)
    pp = order[np.repeat(lo, cnt) + _ragged_arange(cnt)]
    r = rects[pr]
    ok = (r[:, 0] <= px[pp]) & (px[pp] <= r[:, 2]) & (r[:, 1] <= py[pp]) & (py[pp] <= r[:, 3])
    pr, pp = pr[ok], pp[ok]
    srt = np.argsort(pr * px.size + pp)  # unique keys: the (rect, point) order
    return pr[srt], pp[srt]


def _group_median(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Median of values per group id (NaN for empty groups); pandas' median semantics."""
    out = np.full(n_groups, np.nan)
    if values.size == 0:
        return out
    srt = np.lexsort((values, groups))
    v, g = values[srt], groups[srt]
    counts = np.bincount(g, minlength=n_groups)
    starts = np.cumsum(counts) - counts
    has = counts > 0
    lo = starts + (counts - 1) // 2
    hi = starts + counts // 2
    out[has] = 0.5 * (v[lo[has]] + v[hi[has]])
    return out


# --------------------------------------------------------------------------------------------
# Step 1: boxes -> Gaussians -> heat map -> contours (§10.2)
# --------------------------------------------------------------------------------------------


@dataclass
class _Gaussians:
    """Per-detection quantities of §10.2 (all (N,) arrays, int boxes truncated, §10.0)."""

    x1: np.ndarray
    y1: np.ndarray
    x2: np.ndarray
    y2: np.ndarray
    cx: np.ndarray  # original (unshrunk) centre, may be .5
    cy: np.ndarray
    sx1: np.ndarray  # shrunk box (not clipped)
    sy1: np.ndarray
    sx2: np.ndarray
    sy2: np.ndarray
    sigma_x: np.ndarray  # w' / 2
    sigma_y: np.ndarray
    scale: np.ndarray  # kernel = scale * g - offset (min-max normalised to [0, confidence])
    offset: np.ndarray


def shrink_boxes(boxes: np.ndarray, confidence: np.ndarray, box_size_factor: float = 0.5):
    """Centres, shrunk boxes, sigmas and kernel normalisation of every detection (§10.2).

    Args:
        boxes: (N, 4) integer boxes (x1, y1, x2, y2) (already truncated, §10.0).
        confidence: (N,) kernel peak values.
        box_size_factor: 0.5 => w' ~ w / 2 (w = 10 -> shift int(2.5) = 2 -> w' = 6, sigma = 3).

    Returns:
        _Gaussians.
    """
    b = np.asarray(boxes, dtype=np.int64)
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    w, h = x2 - x1, y2 - y1
    cx = x1 + w / 2.0
    cy = y1 + h / 2.0
    ws = (w * (1.0 - box_size_factor) / 2.0).astype(np.int64)  # truncation, as astype(int32)
    hs = (h * (1.0 - box_size_factor) / 2.0).astype(np.int64)
    sx1, sx2, sy1, sy2 = x1 + ws, x2 - ws, y1 + hs, y2 - hs
    wp, hp = sx2 - sx1, sy2 - sy1
    # Kernel exp(-x^2/(2 sx^2) - y^2/(2 sy^2)) on linspace(-w'/2, w'/2, w'): the edge samples sit
    # at +-1 sigma (x^2 / (2 sigma^2) = 0.5); the innermost samples at 0 (odd w') or at
    # +-w'/(2 (w'-1)) (even w'), and a single sample (w' = 1) sits at -0.5 = the edge.
    def inner(n):
        nn = np.maximum(n, 2).astype(np.float64)
        even = 1.0 / (2.0 * (nn - 1.0) ** 2)
        return np.where(n <= 1, 0.5, np.where(n % 2 == 1, 0.0, even))

    gmax = np.exp(-inner(wp) - inner(hp))
    gmin = np.exp(-1.0)
    rng = gmax - gmin
    conf = np.asarray(confidence, dtype=np.float64)
    # cv2.normalize(NORM_MINMAX) to [0, confidence]; QUIRK: a constant kernel (w', h' <= 2)
    # has range <= DBL_EPSILON and becomes all zeros.
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(rng > _DBL_EPSILON, conf / np.where(rng > 0, rng, 1.0), 0.0)
    return _Gaussians(
        x1, y1, x2, y2, cx, cy, sx1, sy1, sx2, sy2, wp / 2.0, hp / 2.0, scale, scale * gmin
    )


def _axis_profile(lo, size, sigma, pos):
    """Kernel factor exp(-(l / (sqrt 2 sigma))^2) at integer pixel pos of a box starting at lo."""
    size = size.astype(np.float64)
    step = np.where(size > 1, size / np.maximum(size - 1.0, 1.0), 0.0)
    t = (pos - lo).astype(np.float64)
    lin = np.where(t >= size - 1, size / 2.0, -size / 2.0 + t * step)  # linspace, exact end
    z = lin / (np.sqrt(2.0) * sigma)
    return np.exp(-(z * z))


def choose_downscale(g: _Gaussians, config: EmMergerConfig) -> int:
    """Heat-map downscale s (1 = full resolution), from the median shrunk box side."""
    if config.heat_map_downscale is not None:
        return int(config.heat_map_downscale)
    side = np.minimum(g.sx2 - g.sx1, g.sy2 - g.sy1)
    side = side[side > 0]
    if side.size == 0:
        return 1
    return max(1, int(np.median(side) / config.heat_map_samples_per_box))


def _sample_range(lo, hi, s, n_red):
    """Reduced indices c whose sample c*s + s//2 lies in the pixel range [lo, hi)."""
    o = s // 2
    c_lo = np.maximum(-((o - lo) // s), 0)  # ceil((lo - o) / s)
    c_hi = np.minimum((hi - 1 - o) // s, n_red - 1)
    return c_lo, np.maximum(c_hi - c_lo + 1, 0)


def render_heat_map(g: _Gaussians, height: int, width: int, s: int) -> np.ndarray:
    """Sum of the min-max normalised kernels, sampled at the centres of s x s blocks (§10.2).

    With s = 1 this is the original's full-resolution float64 map. B15: each shrunk box is
    clipped to the map and its kernel cropped to match (the original crashed on tiny boxes at the
    right/bottom edge).

    Returns:
        (Hr, Wr) float64 with Hr = floor((height - 1 - s//2) / s) + 1 (and Wr alike).
    """
    o = s // 2
    hr = (height - 1 - o) // s + 1
    wr = (width - 1 - o) // s + 1
    n = g.x1.shape[0]
    xlo, xhi = np.clip(g.sx1, 0, width), np.clip(g.sx2, 0, width)
    ylo, yhi = np.clip(g.sy1, 0, height), np.clip(g.sy2, 0, height)
    cx0, ncx = _sample_range(xlo, xhi, s, wr)
    cy0, ncy = _sample_range(ylo, yhi, s, hr)
    paint = (ncx > 0) & (ncy > 0) & (g.scale > 0)
    ncx = np.where(paint, ncx, 0)
    ncy = np.where(paint, ncy, 0)
    ix = np.repeat(np.arange(n), ncx)
    cols = np.repeat(cx0, ncx) + _ragged_arange(ncx)
    gx = _axis_profile(g.sx1[ix], (g.sx2 - g.sx1)[ix], g.sigma_x[ix], cols * s + o)
    iy = np.repeat(np.arange(n), ncy)
    rows = np.repeat(cy0, ncy) + _ragged_arange(ncy)
    gy = _axis_profile(g.sy1[iy], (g.sy2 - g.sy1)[iy], g.sigma_y[iy], rows * s + o)
    a = sparse.csr_matrix((gy * g.scale[iy], (iy, rows)), shape=(n, hr))
    b = sparse.csr_matrix((gx, (ix, cols)), shape=(n, wr))
    heat = (a.T @ b).toarray()
    # Constant part (- scale * gmin over each painted rectangle) via a 2-D difference array.
    p = np.flatnonzero(paint)
    if p.size:
        r0, r1 = cy0[p], cy0[p] + ncy[p]
        c0, c1 = cx0[p], cx0[p] + ncx[p]
        off = g.offset[p]
        idx = np.concatenate([r0 * (wr + 1) + c0, r0 * (wr + 1) + c1,
                              r1 * (wr + 1) + c0, r1 * (wr + 1) + c1])
        wts = np.concatenate([off, -off, -off, off])
        diff = np.bincount(idx, weights=wts, minlength=(hr + 1) * (wr + 1)).reshape(hr + 1, -1)
        np.cumsum(diff, axis=0, out=diff)  # in place: no further map-sized temporaries
        np.cumsum(diff, axis=1, out=diff)
        heat -= diff[:hr, :wr]
    return heat


def heat_values_at(g: _Gaussians, px: np.ndarray, py: np.ndarray, width: int, height: int):
    """Exact full-resolution heat-map values (float) at integer pixels (px, py)."""
    px = np.asarray(px, dtype=np.int64)
    py = np.asarray(py, dtype=np.int64)
    out = np.zeros(px.shape[0])
    xlo, xhi = np.clip(g.sx1, 0, width), np.clip(g.sx2, 0, width)
    ylo, yhi = np.clip(g.sy1, 0, height), np.clip(g.sy2, 0, height)
    ok = (xhi > xlo) & (yhi > ylo) & (g.scale > 0)
    idx = np.flatnonzero(ok)
    rects = np.stack([xlo[idx], ylo[idx], xhi[idx] - 1, yhi[idx] - 1], axis=1)
    rb, pp = points_in_rects(px, py, rects)
    if rb.size == 0:
        return out
    bi = idx[rb]
    gx = _axis_profile(g.sx1[bi], (g.sx2 - g.sx1)[bi], g.sigma_x[bi], px[pp])
    gy = _axis_profile(g.sy1[bi], (g.sy2 - g.sy1)[bi], g.sigma_y[bi], py[pp])
    val = g.scale[bi] * gx * gy - g.offset[bi]
    return np.bincount(pp, weights=val, minlength=px.shape[0])


def _scaled_heat(values: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """cv2.normalize(0..255, MINMAX) before rounding: (values - vmin) * 255 / (vmax - vmin)."""
    rng = vmax - vmin
    scale = 255.0 / rng if rng > _DBL_EPSILON else 0.0
    return (values - vmin) * scale


def quantise_heat(values: np.ndarray, vmin: float, vmax: float, threshold: int) -> np.ndarray:
    """cv2.normalize(0..255, MINMAX) -> convertScaleAbs (round half even) -> THRESH_TOZERO."""
    q = np.clip(np.rint(_scaled_heat(values, vmin, vmax)), 0, 255)
    return np.where(q > threshold, q, 0.0)


def heat_mask(heat: np.ndarray, vmin: float, vmax: float, threshold: int,
              overwrite: bool = False) -> np.ndarray:
    """uint8 mask of ``quantise_heat(heat, vmin, vmax, threshold) > 0`` in two passes, not five.

    With x = (heat - vmin) * 255 / (vmax - vmin) in [0, 255] the clip changes nothing, and
    where(q > t, q, 0) > 0 <=> rint(x) > max(t, 0). ``overwrite=True`` reuses ``heat`` as scratch.
    """
    x = heat if overwrite else heat.copy()
    rng = vmax - vmin
    x -= vmin  # the arithmetic of _scaled_heat, in place
    x *= 255.0 / rng if rng > _DBL_EPSILON else 0.0
    return (np.rint(x, out=x) > max(threshold, 0)).view(np.uint8)


def full_resolution_area(area: float, perimeter: float, s: int) -> float:
    """Full-resolution cv2.contourArea estimated from the contour of a map downscaled by s.

    A blob of a x b pixels has the pixel-centre polygon area (a - 1)(b - 1); the same blob on
    the s-times coarser grid has area A' = (a/s - 1)(b/s - 1) and perimeter P' = 2(a/s + b/s - 2),
    and s^2 A' + s (s - 1) P' / 2 + (s - 1)^2 = (a - 1)(b - 1) exactly (s = 1: A' itself).
    """
    return s * s * area + s * (s - 1) * perimeter / 2.0 + (s - 1) ** 2


# --------------------------------------------------------------------------------------------
# Steps 4-5: redundant components, candidate boxes (§10.5, §10.6)
# --------------------------------------------------------------------------------------------


def ellipse_params(cov: np.ndarray, chi: float, mirror: bool = False):
    """cv2.eigen-equivalent ellipse (angle in integer degrees, integer semi-axes) per component.

    The first semi-axis (chi * sqrt(lambda_max)) runs along the major eigenvector v0 at
    angle = atan2(v0.y, v0.x) in image coordinates (x right, y down), which is what
    cv2.ellipse2Poly's angle means. B12: the original passed -angle, mirroring tilted ellipses;
    ``mirror=True`` reproduces that.

    Returns:
        (angles (K,), axis0 (K,), axis1 (K,)) int64 arrays (rounded half to even, like round()).
    """
    cov = np.nan_to_num(np.asarray(cov, dtype=np.float64))
    a, b, d = cov[:, 0, 0], 0.5 * (cov[:, 0, 1] + cov[:, 1, 0]), cov[:, 1, 1]
    mid = 0.5 * (a + d)
    disc = np.sqrt(0.25 * (a - d) ** 2 + b * b)
    l0, l1 = mid + disc, mid - disc
    vx = np.where(a >= d, l0 - d, b)
    vy = np.where(a >= d, b, l0 - a)
    diag = b == 0
    vx = np.where(diag, np.where(a >= d, 1.0, 0.0), vx)
    vy = np.where(diag, np.where(a >= d, 0.0, 1.0), vy)
    angles = np.round(np.degrees(np.arctan2(vy, vx)) % 360.0).astype(np.int64)
    if mirror:
        angles = -angles
    ax0 = np.round(chi * np.sqrt(np.maximum(l0, 0.0))).astype(np.int64)
    ax1 = np.round(chi * np.sqrt(np.maximum(l1, 0.0))).astype(np.int64)
    return angles, ax0, ax1


def ellipse_contour(centre, axes, angle, sub_w, sub_h, delta=15):
    """First external contour of the ellipse filled on a (sub_h, sub_w) zero mask (§10.5).

    Drawn on the ellipse's bounding box (+1 px) clipped to the mask, which gives the same pixels
    as filling the whole mask. If nothing of it lands in the mask, the polygon itself is used (the
    original crashed there).
    """
    return _ellipse_contour(int(centre[0]), int(centre[1]), int(axes[0]), int(axes[1]),
                            int(angle), int(sub_w), int(sub_h), int(delta))


def _ellipse_contour(cx, cy, ax0, ax1, angle, sub_w, sub_h, delta):
    """:func:`ellipse_contour` on plain Python ints (the hot path of the redundancy pass)."""
    poly = cv2.ellipse2Poly((cx, cy), (ax0, ax1), angle, 0, 360, delta)
    bx, by, bw, bh = cv2.boundingRect(poly)  # poly spans [bx, bx + bw - 1] x [by, by + bh - 1]
    x0 = bx - 1 if bx > 0 else 0
    y0 = by - 1 if by > 0 else 0
    x1 = min(bx + bw + 1, sub_w)
    y1 = min(by + bh + 1, sub_h)
    if x1 > x0 and y1 > y0:
        canvas = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
        cv2.fillPoly(canvas, [poly], 1, offset=(-x0, -y0))
        found = cv2.findContours(canvas, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
                                 offset=(x0, y0))[-2]
        if found:
            return found[0]
    return poly.reshape(-1, 1, 2).astype(np.int32)


@functools.lru_cache(maxsize=8)
def _chi_radius(quantile: float) -> float:
    """sqrt(chi2_2.ppf(quantile)): the redundancy ellipse radius in sigmas (cached: ~40 us)."""
    return math.sqrt(chi2.ppf(quantile, 2))


# Raster slack (px) between cv2's filled ellipse contour and the continuous ellipse: used only to
# decide which pairs are clear-cut without drawing them.
_RASTER_SLACK = 2.0


def redundant_pairs_batch(mu_r, cov, cid, sub_w, sub_h, config: EmMergerConfig):
    """Overlapping component pairs of every contour, in walk order (§10.5 steps 2-5).

    For components i < j of one contour: score = -inf when either (rounded) centre lies inside or
    on the other's ellipse contour, else a + b - |mu_i - mu_j| (a, b: distance of each centre to
    the other's ellipse contour, cv2.pointPolygonTest); only negative scores are returned.
    Clear-cut pairs are decided analytically: a centre deep inside the other's ellipse (by more
    than the raster slack, and inside the sub-map) gives -inf, and pairs whose lower-bound
    distances already make the score >= 0 are skipped. Only the remaining borderline pairs are
    drawn and measured with OpenCV, exactly as the original.

    Args:
        mu_r: (K, 2) rounded local means. cov: (K, 2, 2). cid: (K,) contour id, non-decreasing.
        sub_w, sub_h: (C,) contour rectangle sizes, indexed by contour id.

    Returns:
        (i (P,), j (P,), score (P,)): global component indices, sorted by (contour, score, i, j).
        Ties in score keep (i, j) order (the original's unstable argsort left them to chance).
    """
    empty = np.zeros(0, dtype=np.int64)
    counts = np.bincount(cid, minlength=int(cid.max()) + 1 if cid.size else 0)
    starts = np.cumsum(counts) - counts
    npair = counts * (counts - 1) // 2
    if cid.size < 2 or npair.sum() == 0:
        return empty, empty, np.zeros(0)
    # All (i < j) pairs within each contour.
    grp = np.repeat(np.arange(counts.size), npair)
    q = _ragged_arange(npair)
    kk = counts[grp]
    # Invert q -> (i, j) of the upper triangle row by row: row i has kk - 1 - i entries.
    i_loc = (kk - 0.5 - np.sqrt((kk - 0.5) ** 2 - 2.0 * q)).astype(np.int64)
    row_start = i_loc * (2 * kk - i_loc - 1) // 2
    fix = q < row_start
    i_loc[fix] -= 1
    row_start = i_loc * (2 * kk - i_loc - 1) // 2
    fix = q >= row_start + (kk - 1 - i_loc)
    i_loc[fix] += 1
    row_start = i_loc * (2 * kk - i_loc - 1) // 2
    j_loc = i_loc + 1 + (q - row_start)
    ii, jj = starts[grp] + i_loc, starts[grp] + j_loc

    chi = _chi_radius(float(config.ellipsoid_thresh))
    angles, ax0, ax1 = ellipse_params(cov, chi, config.mirror_ellipse_angle)
    big = np.maximum(ax0, ax1).astype(np.float64)
    small = np.minimum(ax0, ax1).astype(np.float64)
    mf = mu_r.astype(np.float64)
    dvec = mf[jj] - mf[ii]
    dist = np.sqrt(dvec[:, 0] * dvec[:, 0] + dvec[:, 1] * dvec[:, 1])
    near = dist <= big[ii] + big[jj] + 2.0 * _RASTER_SLACK + 1.0
    ii, jj, dist, dvec, grp = ii[near], jj[near], dist[near], dvec[near], grp[near]
    if ii.size == 0:
        return empty, empty, np.zeros(0)

    th = np.radians(angles.astype(np.float64))
    cos_t, sin_t = np.cos(th), np.sin(th)

    def rho(e, v):  # Mahalanobis radius of offset v from ellipse e's centre
        u = v[:, 0] * cos_t[e] + v[:, 1] * sin_t[e]
        w = -v[:, 0] * sin_t[e] + v[:, 1] * cos_t[e]
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.sqrt((u / ax0[e]) ** 2 + (w / ax1[e]) ** 2)
        return np.where(small[e] > 0, r, np.nan)

    r_ij = rho(ii, dvec)  # centre j seen from ellipse i
    r_ji = rho(jj, -dvec)
    in_sub_i = (mf[ii, 0] <= sub_w[cid[ii]] - 1) & (mf[ii, 1] <= sub_h[cid[ii]] - 1)
    in_sub_j = (mf[jj, 0] <= sub_w[cid[jj]] - 1) & (mf[jj, 1] <= sub_h[cid[jj]] - 1)
    with np.errstate(invalid="ignore"):
        deep_j = in_sub_j & ((1.0 - r_ij) * small[ii] > _RASTER_SLACK)
        deep_i = in_sub_i & ((1.0 - r_ji) * small[jj] > _RASTER_SLACK)
        a_lb = np.fmax((r_ij - 1.0) * small[ii], dist - big[ii]) - _RASTER_SLACK
        b_lb = np.fmax((r_ji - 1.0) * small[jj], dist - big[jj]) - _RASTER_SLACK
        clear_pos = (a_lb > 0) & (b_lb > 0) & (a_lb + b_lb - dist >= 0)
    score = np.full(ii.size, np.nan)
    score[deep_i | deep_j] = -np.inf
    score[~(deep_i | deep_j) & clear_pos] = 1.0
    todo = np.flatnonzero(np.isnan(score))
    cnts = {}
    mu_l, ax0_l, ax1_l, ang_l = mu_r.tolist(), ax0.tolist(), ax1.tolist(), angles.tolist()
    sw_l, sh_l = sub_w[cid].tolist(), sub_h[cid].tolist()
    delta = int(config.ellipse_delta)

    def cnt(e):  # each ellipse drawn at most once
        c = cnts.get(e)
        if c is None:
            c = cnts[e] = _ellipse_contour(mu_l[e][0], mu_l[e][1], ax0_l[e], ax1_l[e], ang_l[e],
                                           sw_l[e], sh_l[e], delta)
        return c

    pts = mf.tolist()
    ninf = -math.inf
    vals = []
    for i, j, dd in zip(ii[todo].tolist(), jj[todo].tolist(), dist[todo].tolist()):
        # PORT: pointPolygonTest needs a float point on OpenCV 4.
        a = -cv2.pointPolygonTest(cnt(i), pts[j], True)
        if a <= 0:  # -inf whatever b is: contour j need not be drawn for this pair
            vals.append(ninf)
            continue
        b = -cv2.pointPolygonTest(cnt(j), pts[i], True)
        vals.append(ninf if b <= 0 else a + b - dd)
    score[todo] = vals
    neg = score < 0
    ii, jj, score, grp = ii[neg], jj[neg], score[neg], grp[neg]
    srt = np.lexsort((jj, ii, score, grp))
    return ii[srt], jj[srt], score[srt]


def walk_redundant(ii, jj, heat):
    """Removal walk of §10.5 step 5 over pairs in walk order: for each pair with neither member
    removed yet, remove the one with the lower heat at its centre (ties remove i).

    Args:
        ii, jj: (P,) component indices. heat: indexable heat value per component.

    Returns:
        set of removed component indices.
    """
    removed = set()
    for i, j in zip(ii.tolist(), jj.tolist()):
        if i in removed or j in removed:
            continue
        removed.add(j if heat[j] < heat[i] else i)
    return removed


def candidate_boxes(mu_r, cov, offset, sub_size, sigmas=2.0):
    """2-sigma axis-aligned boxes of the components, clipped to the contour rectangle (§10.6).

    Args:
        mu_r: (K, 2) rounded integer local means. cov: (K, 2, 2).
        offset: (K, 2) contour rectangle origin. sub_size: (K, 2) rectangle (width, height).

    Returns:
        (K, 4) int64 absolute boxes (not yet filtered by size).
    """
    with np.errstate(invalid="ignore"):
        sx = np.sqrt(cov[:, 0, 0])
        sy = np.sqrt(cov[:, 1, 1])
    x = mu_r[:, 0].astype(np.float64)
    y = mu_r[:, 1].astype(np.float64)
    # Python's max(0, nan) = 0 and min(W, nan) = W: np.fmax / np.fmin have the same semantics.
    bx1 = np.round(np.fmax(0.0, x - sigmas * sx))
    by1 = np.round(np.fmax(0.0, y - sigmas * sy))
    bx2 = np.round(np.fmin(sub_size[:, 0], x + sigmas * sx))
    by2 = np.round(np.fmin(sub_size[:, 1], y + sigmas * sy))
    local = np.stack([bx1, by1, bx2, by2], axis=1).astype(np.int64)
    return local + np.concatenate([offset, offset], axis=1).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Step 6: selection rules (§10.7)
# --------------------------------------------------------------------------------------------


def _soft_scores(d: np.ndarray, config: EmMergerConfig) -> np.ndarray:
    if config.soft_column is not None:
        return d[:, config.soft_column].astype(np.float64)
    r = config.hard_score_rate
    if r >= 1.0:
        return d[:, 5].astype(np.float64)
    return (d[:, 4] - r * d[:, 5]) / (1.0 - r)


def _iou_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of aligned rows (no +1), 0 for an empty union."""
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = iw * ih
    union = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
             - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def selection_scores(d, boxes, cand_boxes, owner, config):
    """Score of every claimed detection under config.selection (higher wins).

    Args:
        d: (N, C) detections. boxes: (N, 4) integer boxes. cand_boxes: (M, 4) candidate boxes.
        owner: (N,) candidate index of each detection, -1 when unclaimed.
    """
    sel = config.selection
    conf, hard = d[:, 4].astype(np.float64), d[:, 5].astype(np.float64)
    if sel == "original":
        return 0.5 * conf + 0.5 * hard  # QUIRK/KEEP: = 0.75 hard + 0.25 soft at rate 0.5
    if sel == "confidence":
        return conf
    if sel == "hard":
        return hard
    soft = _soft_scores(d, config)
    if sel == "soft_iou":
        return soft
    claimed = np.flatnonzero(owner >= 0)
    out = np.full(d.shape[0], -np.inf)
    if sel == "candidate_iou":
        out[claimed] = soft[claimed] * _iou_rows(
            boxes[claimed].astype(np.float64), cand_boxes[owner[claimed]].astype(np.float64))
        return out
    # "consensus": sum over the candidate's claimed detections o of soft_o * IoU(t, o).
    srt = claimed[np.argsort(owner[claimed], kind="stable")]
    grp = owner[srt]
    counts = np.bincount(grp, minlength=cand_boxes.shape[0])
    starts = np.cumsum(counts) - counts
    reps = counts[grp]
    t = np.repeat(srt, reps)
    o = srt[np.repeat(starts[grp], reps) + _ragged_arange(reps)]
    bf = boxes.astype(np.float64)
    val = soft[o] * _iou_rows(bf[t], bf[o])
    out[:] = 0.0
    out += np.bincount(t, weights=val, minlength=d.shape[0])
    out[owner < 0] = -np.inf
    return out


# --------------------------------------------------------------------------------------------
# The merger
# --------------------------------------------------------------------------------------------


def _validate(detections, image_shape) -> np.ndarray:
    arr = np.asarray(detections)
    empty = (arr.ndim == 2 and arr.shape[0] == 0) or (arr.ndim == 1 and arr.size == 0)
    if not empty and (arr.ndim != 2 or arr.shape[1] < 6):
        raise ValueError(
            "merge_detections: detections must be (N, 6+) [x1, y1, x2, y2, confidence, "
            f"hard_score, ...], got shape {arr.shape}")
    if len(tuple(image_shape)) < 2 or int(image_shape[0]) <= 0 or int(image_shape[1]) <= 0:
        raise ValueError(f"merge_detections: image_shape must be (height, width) > 0, got "
                         f"{tuple(image_shape)}")
    if arr.ndim == 2 and arr.shape[0] > 0:
        core = arr[:, :6].astype(np.float64)
        bad = ~np.isfinite(core).all(axis=1)
        if bad.any():
            raise ValueError(f"merge_detections: row {int(np.flatnonzero(bad)[0])} has a "
                             "non-finite box or score")
        inv = (core[:, 2] < core[:, 0]) | (core[:, 3] < core[:, 1])
        if inv.any():
            r = int(np.flatnonzero(inv)[0])
            raise ValueError(f"merge_detections: row {r} has x2 < x1 or y2 < y1: {core[r, :4]}")
    return arr


def merge_detections(detections: np.ndarray, image_shape, config: EmMergerConfig | None = None):
    """Merge the raw detections of one image into one detection per object (spec §10).

    Args:
        detections: (N, 6+) [x1, y1, x2, y2, confidence, hard_score, ...] in original-image
            pixels; extra columns are carried through untouched. N may be 0.
        image_shape: (height, width) of the original image (B2: no image is read).
        config: EmMergerConfig; None => defaults (the original's effective constants).

    Returns:
        (M, same columns) rows of the input: the kept original detections, unchanged, in the
        order of the final suppression (candidate order, §10.8).

    Raises:
        ValueError: on a bad shape, non-finite values or an inverted box (naming the row).
    """
    cfg = config if config is not None else EmMergerConfig()
    arr = _validate(detections, image_shape)
    if arr.ndim != 2 or arr.shape[0] == 0:
        return arr.reshape(0, arr.shape[1] if arr.ndim == 2 else 6).copy()  # B9
    height, width = int(image_shape[0]), int(image_shape[1])
    # Canonical order: confidence descending (what predict feeds, §9 step 7), ties by box and
    # hard score, so the result does not depend on the input row order.
    order = np.lexsort((arr[:, 5], arr[:, 3], arr[:, 2], arr[:, 1], arr[:, 0], -arr[:, 4]))
    d = arr[order]
    conf = d[:, 4].astype(np.float64)
    boxes = np.trunc(d[:, :4].astype(np.float64)).astype(np.int64)  # §10.0: astype(int)
    g = shrink_boxes(boxes, conf, cfg.box_size_factor)

    chosen = _merge_core(d, boxes, conf, g, height, width, cfg)
    if chosen.size == 0:
        return d[:0].copy()
    return d[chosen[final_suppression(d[chosen], cfg)]]


def final_suppression(rows: np.ndarray, config: EmMergerConfig | None = None) -> np.ndarray:
    """Step 7 (§10.8): greedy suppression of the picked detections across contours.

    QUIRK: overlap = intersection / min(area) on the truncated integer boxes, suppress at >= 0.3,
    ordered by confidence; survivors stay in their given (candidate) order. B11: every remaining
    box is compared (the original never compared the last one, so with two candidates nothing
    was ever suppressed).

    Args:
        rows: (M, 6+) picked detections in candidate order.
        config: EmMergerConfig (final_nms_threshold).

    Returns:
        (K,) int64 indices of the kept rows, ascending.
    """
    cfg = config if config is not None else EmMergerConfig()
    rows = np.asarray(rows)
    boxes = np.trunc(rows[:, :4].astype(np.float64))
    return non_max_suppression(boxes, rows[:, 4].astype(np.float64), cfg.final_nms_threshold,
                               overlap="iomin")


@dataclass
class Blobs:
    """Contours of the thresholded heat map and their §10.3 statistics (full-res pixels)."""

    rect: np.ndarray  # (C, 4) int64 bounding rectangles (x, y, w, h)
    area: np.ndarray  # (C,) contour area (cv2.contourArea at full resolution, or its estimate)
    n: np.ndarray  # (C,) members
    k: np.ndarray  # (C,) K estimate
    valid: np.ndarray  # (C,) n > 0 and rectangle wider and taller than min_contour_side
    member_contour: np.ndarray  # (P,) contour of each (contour, detection) membership pair
    member_det: np.ndarray  # (P,) detection of each pair, sorted by contour then detection
    q: np.ndarray | None  # quantised (0..255, thresholded) heat map at s == 1, else None
    vmin: float
    vmax: float
    downscale: int


def analyse_blobs(g: _Gaussians, boxes: np.ndarray, height: int, width: int,
                  cfg: EmMergerConfig, s: int | None = None) -> Blobs:
    """Steps 1-2 up to the K estimate (§10.2, §10.3 steps 1-4)."""
    s = choose_downscale(g, cfg) if s is None else int(s)
    heat = render_heat_map(g, height, width, s)
    vmin, vmax = float(heat.min()), float(heat.max())
    if s == 1:
        q = quantise_heat(heat, vmin, vmax, cfg.heat_threshold)
        mask = (q > 0).view(np.uint8)
    else:  # only the mask is needed at s > 1 (step 4 reads exact values, heat_values_at)
        q = None
        mask = heat_mask(heat, vmin, vmax, cfg.heat_threshold, overwrite=True)
    contours = cv2.findContours(mask, cv2.RETR_EXTERNAL,
                                cv2.CHAIN_APPROX_SIMPLE)[-2]  # PORT: [-2] on OpenCV 3 and 4
    n_c = len(contours)
    rect = np.array([cv2.boundingRect(c) for c in contours], dtype=np.int64).reshape(-1, 4)
    if s == 1:
        area = np.array([cv2.contourArea(c) for c in contours], dtype=np.float64)
    else:
        area = np.array([full_resolution_area(cv2.contourArea(c), cv2.arcLength(c, True), s)
                         for c in contours], dtype=np.float64)
        rect = rect * s  # whole s x s blocks
        rect[:, 2] = np.minimum(rect[:, 0] + rect[:, 2], width) - rect[:, 0]
        rect[:, 3] = np.minimum(rect[:, 1] + rect[:, 3], height) - rect[:, 1]
    rx, ry, rw, rh = rect[:, 0], rect[:, 1], rect[:, 2], rect[:, 3]
    # §10.3 step 2: members = detections whose ORIGINAL centre is in the bounding rectangle,
    # inclusive (QUIRK: the polygon is ignored; a detection may belong to several rectangles).
    mc, md = points_in_rects(g.cx, g.cy, np.stack([rx, ry, rx + rw, ry + rh], axis=1))
    n_mem = np.bincount(mc, minlength=n_c)
    w = (boxes[:, 2] - boxes[:, 0]).astype(np.float64)
    h = (boxes[:, 3] - boxes[:, 1]).astype(np.float64)
    f = cfg.box_size_factor
    med = _group_median(((w * f) * (h * f))[md], mc, n_c)  # exact factor, not the int shift
    with np.errstate(divide="ignore", invalid="ignore"):
        approx = np.where(med > 0, np.minimum(np.round(area / np.where(med > 0, med, 1.0)),
                                              cfg.max_k), 0.0)
    k = np.maximum(1, approx.astype(np.int64))
    valid = (n_mem > 0) & (rw > cfg.min_contour_side) & (rh > cfg.min_contour_side)
    return Blobs(rect, area, n_mem, k, valid, mc, md, q, vmin, vmax, s)


def _merge_core(d, boxes, conf, g, height, width, cfg):
    """Steps 1-6; returns the chosen detection row (in d) of every candidate, candidate order."""
    n_det = d.shape[0]
    bl = analyse_blobs(g, boxes, height, width, cfg)
    if bl.rect.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    rx, ry, rw, rh = bl.rect[:, 0], bl.rect[:, 1], bl.rect[:, 2], bl.rect[:, 3]
    mc, md, n_mem, k, valid = bl.member_contour, bl.member_det, bl.n, bl.k, bl.valid
    q, vmin, vmax, s = bl.q, bl.vmin, bl.vmax, bl.downscale

    starts = np.cumsum(n_mem) - n_mem
    sigma_cov = np.zeros((n_det, 2, 2))
    sigma_cov[:, 0, 0] = g.sigma_x ** 2
    sigma_cov[:, 1, 1] = g.sigma_y ** 2

    # Per contour: list of (mu (K,2) float local, cov (K,2,2)) or fallback candidate boxes.
    comp_mu, comp_cov, comp_contour = [], [], []
    fallback = {}
    budget = CollapseBudget(init_work=cfg.init_budget, em_work=cfg.em_budget)

    direct = valid & (n_mem <= k)  # B10: components = the member Gaussians
    costs = init_costs(n_mem, k)
    needs_nms = valid & (n_mem > k) & ((k <= cfg.min_k) | (costs > cfg.init_budget))
    single = valid & (n_mem > k) & (k == 1) & ~needs_nms
    general = valid & (n_mem > k) & (k > 1) & ~needs_nms

    def members(mask, contours):
        """Members of the masked contours: (contour, detection, position in ``contours``, EM
        weight = confidence normalised per contour, spec §10.4)."""
        sel = mask[mc]
        gc, gd = mc[sel], md[sel]
        pos = np.searchsorted(contours, gc)
        csum = np.bincount(pos, weights=conf[gd], minlength=contours.size)
        counts = np.bincount(pos, minlength=contours.size)
        return gc, gd, pos, _alpha(conf[gd], csum[pos], counts[pos])

    # k == 1: agglomerative init merges everything into the moment-matched Gaussian; hard EM then
    # converges at iteration 2 to the same moment-matched Gaussian (one M-step over all members).
    one = np.flatnonzero(single)
    if one.size:
        gc, gd, pos, alpha = members(single, one)
        ux, uy = g.cx[gd] - rx[gc], g.cy[gd] - ry[gc]
        beta = np.bincount(pos, weights=alpha, minlength=one.size)
        mx = np.bincount(pos, weights=alpha * ux, minlength=one.size) / beta
        my = np.bincount(pos, weights=alpha * uy, minlength=one.size) / beta
        dx, dy = ux - mx[pos], uy - my[pos]
        cxx = np.bincount(pos, weights=alpha * (sigma_cov[gd, 0, 0] + dx * dx),
                          minlength=one.size) / beta
        cxy = np.bincount(pos, weights=alpha * (dx * dy), minlength=one.size) / beta
        cyy = np.bincount(pos, weights=alpha * (sigma_cov[gd, 1, 1] + dy * dy),
                          minlength=one.size) / beta
        cov1 = np.stack([np.stack([cxx, cxy], 1), np.stack([cxy, cyy], 1)], 1)
        comp_mu.append(np.stack([mx, my], 1))
        comp_cov.append(cov1)
        comp_contour.append(one)
        over = 3.0 * n_mem[one] > cfg.em_budget  # B14: same parameters, message only
        for c in one[over]:
            logger.warning("contour %d n=%d k=1: %s", c, n_mem[c], MSG_EM_BUDGET)

    for c in np.flatnonzero(needs_nms).tolist():
        mem = md[starts[c]:starts[c] + n_mem[c]]
        logger.warning("contour %d n=%d k=%d: k <= min_k or EM failed - falling back to NMS",
                       c, n_mem[c], k[c])
        fallback[c] = _fallback_boxes(boxes[mem], conf[mem], cfg)

    # n <= k (B10): the member Gaussians themselves are the components.
    sel = direct[mc]
    if sel.any():
        gc, gd = mc[sel], md[sel]
        comp_mu.append(np.stack([g.cx[gd] - rx[gc], g.cy[gd] - ry[gc]], axis=1))
        comp_cov.append(sigma_cov[gd])
        comp_contour.append(gc)

    # n > k > 1: agglomerative init + hard EM, all contours at once (mog.collapse_batch).
    gen = np.flatnonzero(general)
    if gen.size:
        gc, gd, pos, alpha = members(general, gen)
        mu = np.stack([g.cx[gd] - rx[gc], g.cy[gd] - ry[gc]], axis=1)
        _, bmu, bcov, bgrp, status, _ = collapse_batch(
            alpha, mu, sigma_cov[gd], pos, k[gen], cfg.max_iter, cfg.epsilon, budget, gen.size)
        for p_, st in enumerate(status):
            if st == "init_budget":  # unreachable with the check above; kept for safety
                c = int(gen[p_])
                mem = md[starts[c]:starts[c] + n_mem[c]]
                fallback[c] = _fallback_boxes(boxes[mem], conf[mem], cfg)
        comp_mu.append(bmu)
        comp_cov.append(bcov)
        comp_contour.append(gen[bgrp])

    cand = []  # (contour, sub index, box) pieces
    if comp_mu:
        mu = np.concatenate(comp_mu)
        cov = np.concatenate(comp_cov)
        cid = np.concatenate(comp_contour).astype(np.int64)
        srt = np.argsort(cid, kind="stable")  # contour order, component order within
        mu, cov, cid = mu[srt], cov[srt], cid[srt]
        with np.errstate(invalid="ignore"):
            mu_r = np.round(np.nan_to_num(mu, nan=0.0)).astype(np.int64)  # §10.5 step 1
        keep = _remove_redundant_all(mu_r, cov, cid, rx, ry, rw, rh, g, q, vmin, vmax, s,
                                     width, height, cfg)
        mu_r, cov, cid = mu_r[keep], cov[keep], cid[keep]
        offset = np.stack([rx[cid], ry[cid]], axis=1)
        size = np.stack([rw[cid], rh[cid]], axis=1).astype(np.float64)
        cb = candidate_boxes(mu_r, cov, offset, size, cfg.candidate_sigmas)
        sub = np.arange(cid.size) - np.searchsorted(cid, cid)
        cand.append((cid, sub, cb))
    for c, fb in fallback.items():
        cand.append((np.full(len(fb), c), np.arange(len(fb)), fb.reshape(-1, 4)))
    if not cand:
        return np.zeros(0, dtype=np.int64)
    cid = np.concatenate([p[0] for p in cand]).astype(np.int64)
    sub = np.concatenate([p[1] for p in cand]).astype(np.int64)
    cb = np.concatenate([p[2] for p in cand]).astype(np.int64)
    bw, bh = cb[:, 2] - cb[:, 0], cb[:, 3] - cb[:, 1]
    ok = (bw > cfg.min_box_size) & (bh > cfg.min_box_size)
    cid, sub, cb = cid[ok], sub[ok], cb[ok]
    srt = np.lexsort((sub, cid))
    cb = cb[srt]
    if cb.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)

    # §10.7: greedy first-come assignment == each detection goes to the first candidate (in
    # creation order) whose box contains its centre (inclusive).
    pc, pd = points_in_rects(g.cx, g.cy, cb.astype(np.float64))
    owner = np.full(n_det, -1, dtype=np.int64)
    first = np.ones(pd.size, dtype=bool)
    if pd.size:
        by_det = np.lexsort((pc, pd))
        pd_s, pc_s = pd[by_det], pc[by_det]
        first = np.r_[True, pd_s[1:] != pd_s[:-1]]
        owner[pd_s[first]] = pc_s[first]
    score = selection_scores(d, boxes, cb, owner, cfg)
    claimed = np.flatnonzero(owner >= 0)
    if claimed.size == 0:
        return np.zeros(0, dtype=np.int64)
    # Arg-max per candidate, first (highest confidence, canonical order) among ties; candidates
    # that claim nothing are dropped.
    o = np.lexsort((claimed, -score[claimed], owner[claimed]))
    ow = owner[claimed][o]
    head = np.r_[True, ow[1:] != ow[:-1]]
    return claimed[o][head]


def _alpha(conf, total, count):
    """EM weights alpha_t = confidence_t / sum (QUIRK: the combined confidence, not soft-IoU);
    uniform 1 / n when a blob's confidences sum to 0."""
    total = np.asarray(total, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.asarray(conf, dtype=np.float64) / total
        return np.where(total > 0, a, 1.0 / np.asarray(count, dtype=np.float64))


def _fallback_boxes(member_boxes, member_conf, cfg):
    """§10.3 fallback: IoMin-0.3 NMS on the members (B11 fixed); survivors > 5 px are candidates."""
    keep = non_max_suppression(member_boxes.astype(np.float64), member_conf,
                               cfg.fallback_nms_threshold, overlap="iomin")
    return member_boxes[keep].astype(np.int64)


def _remove_redundant_all(mu_r, cov, cid, rx, ry, rw, rh, g, q, vmin, vmax, s, width, height,
                          cfg):
    """§10.5 for every contour at once; returns the keep mask over the components."""
    keep = np.ones(cid.size, dtype=bool)
    ii, jj, _ = redundant_pairs_batch(mu_r, cov, cid, rw, rh, cfg)
    if ii.size == 0:
        return keep
    idx = np.unique(np.concatenate([ii, jj]))
    c_of = cid[idx]
    # Heat at each centre pixel, clamped to the sub-map (§10.5 step 5): the exact
    # full-resolution value, quantised like the 0..255 map.
    px = np.clip(mu_r[idx, 0], 0, rw[c_of] - 1) + rx[c_of]
    py = np.clip(mu_r[idx, 1], 0, rh[c_of] - 1) + ry[c_of]
    if s == 1:
        vals = q[np.clip(py, 0, q.shape[0] - 1), np.clip(px, 0, q.shape[1] - 1)]
    else:
        vals = quantise_heat(heat_values_at(g, px, py, width, height), vmin, vmax,
                             cfg.heat_threshold)
    heat = np.zeros(cid.size)
    heat[idx] = vals
    pc = cid[ii]
    lone = np.bincount(pc, minlength=rw.size)[pc] == 1  # contours with one overlapping pair
    li, lj = ii[lone], jj[lone]
    keep[np.where(heat[lj] < heat[li], lj, li)] = False
    many = ~lone
    if many.any():
        keep[list(walk_redundant(ii[many], jj[many], heat))] = False
    return keep


def _merge_one(args):
    detections, shape, config = args
    return merge_detections(detections, shape, config)


def merge_many(list_of_arrays, shapes, config: EmMergerConfig | None = None,
               processes: int | None = None) -> list:
    """merge_detections over many images; processes None or 1 => serial, else a spawn pool.

    Args:
        list_of_arrays: list of (N_i, 6+) arrays.
        shapes: list of (height, width), one per array.
        config: shared EmMergerConfig.
        processes: worker processes (None/1: in this process).

    Returns:
        list of (M_i, C_i) arrays, in input order.
    """
    if len(list_of_arrays) != len(shapes):
        raise ValueError(f"merge_many: {len(list_of_arrays)} arrays but {len(shapes)} shapes")
    jobs = [(a, s, config) for a, s in zip(list_of_arrays, shapes)]
    if processes is None or processes <= 1 or len(jobs) <= 1:
        return [_merge_one(j) for j in jobs]
    with get_context("spawn").Pool(processes) as pool:
        return pool.map(_merge_one, jobs, chunksize=max(1, len(jobs) // (4 * processes)))
