"""Removal of redundant mixture components by ellipse overlap (the EM-Merger's fourth step).

After the collapse (paper §4.2) a region can still hold two components for one object. As the
original code does, every component is drawn as its chi-square ellipse (1.1774 sigma at the 0.5
quantile); when two ellipses of a region overlap, the component with the lower heat at its centre
is removed. This module owns that test and the removal walk:

- :class:`Components`: the Gaussian components of all regions, in region order;
- :func:`ellipse_params` and :func:`ellipse_contour`: the ellipses as the original draws them;
- :func:`overlapping_pairs`: the overlapping pairs of every region, in removal order;
- :func:`walk_redundant` and :func:`remove_redundant`: which components go.

Speed without changing results: clear-cut pairs are decided analytically (a centre deep inside
the other ellipse, or ellipses clearly apart), and only the borderline pairs are drawn and
measured with OpenCV, each ellipse at most once, on its own bounding box.

NumPy, SciPy (the chi-square quantile) and OpenCV.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.stats import chi2

from object_detector_retinanet.keras_retinanet.config import EmMergerConfig
from object_detector_retinanet.keras_retinanet.postprocess.arrays import pairs_within_segments
from object_detector_retinanet.keras_retinanet.postprocess.heat_map import HeatMap

# Raster slack (px) between cv2's filled ellipse contour and the continuous ellipse: only decides
# which pairs are clear-cut enough to skip drawing; any value >= the true slack gives the same
# results.
RASTER_SLACK = 2.0


@dataclass(frozen=True)
class Components:
    """The Gaussian components of all regions.

    Attributes:
        means: (K, 2) int64 means rounded to pixels, local to the region's rectangle.
        cov: (K, 2, 2) float64 covariances.
        region: (K,) int64 region of every component, non-decreasing.
    """

    means: np.ndarray
    cov: np.ndarray
    region: np.ndarray

    def subset(self, keep: np.ndarray) -> Components:
        """The components selected by a (K,) boolean mask or an index array."""
        return Components(self.means[keep], self.cov[keep], self.region[keep])


def ellipse_params(cov: np.ndarray, chi: float, mirror: bool = False):
    """cv2.eigen-equivalent ellipse (angle in integer degrees, integer semi-axes) per component.

    The first semi-axis (chi * sqrt(lambda_max)) runs along the major eigenvector v0 at
    angle = atan2(v0.y, v0.x) in image coordinates (x right, y down), which is what
    cv2.ellipse2Poly's angle means. The original passed -angle, which mirrors tilted ellipses
    (docs/em-merger.md); ``mirror=True`` reproduces that.

    Args:
        cov: (K, 2, 2) covariances.
        chi: ellipse radius in sigmas.
        mirror: negate the angles (the original's orientation bug).

    Returns:
        (angles (K,), axis0 (K,), axis1 (K,)) int64 arrays (rounded half to even, like round()).
    """
    cov = np.nan_to_num(np.asarray(cov, dtype=np.float64))
    a, b, d = cov[:, 0, 0], 0.5 * (cov[:, 0, 1] + cov[:, 1, 0]), cov[:, 1, 1]
    mid = 0.5 * (a + d)
    disc = np.sqrt(0.25 * (a - d) ** 2 + b * b)
    lambda0, lambda1 = mid + disc, mid - disc
    vx = np.where(a >= d, lambda0 - d, b)
    vy = np.where(a >= d, b, lambda0 - a)
    diagonal = b == 0
    vx = np.where(diagonal, np.where(a >= d, 1.0, 0.0), vx)
    vy = np.where(diagonal, np.where(a >= d, 0.0, 1.0), vy)
    angles = np.round(np.degrees(np.arctan2(vy, vx)) % 360.0).astype(np.int64)
    if mirror:
        angles = -angles
    axis0 = np.round(chi * np.sqrt(np.maximum(lambda0, 0.0))).astype(np.int64)
    axis1 = np.round(chi * np.sqrt(np.maximum(lambda1, 0.0))).astype(np.int64)
    return angles, axis0, axis1


def ellipse_contour(centre, axes, angle, sub_w, sub_h, delta=15):
    """First external contour of the ellipse filled on a (sub_h, sub_w) zero mask.

    Args:
        centre: (x, y) integer centre, local to the region's rectangle.
        axes: (axis0, axis1) integer semi-axes.
        angle: integer degrees (cv2.ellipse2Poly's angle).
        sub_w, sub_h: the region's rectangle size (the mask).
        delta: angular step of the polygon (degrees).

    Returns:
        (M, 1, 2) int32 contour.
    """
    return _ellipse_contour(
        (int(centre[0]), int(centre[1])),
        (int(axes[0]), int(axes[1])),
        int(angle),
        (int(sub_w), int(sub_h)),
        int(delta),
    )


def _ellipse_contour(centre, axes, angle, mask_size, delta):
    """:func:`ellipse_contour` on tuples of Python ints (the hot path of the redundancy pass).

    Drawn on the ellipse's bounding box (+1 px) clipped to the mask, which gives the same pixels
    as filling the whole mask. If nothing of it lands in the mask, the polygon itself is used (the
    original crashed there).
    """
    poly = cv2.ellipse2Poly(centre, axes, angle, 0, 360, delta)
    bx, by, bw, bh = cv2.boundingRect(poly)  # poly spans [bx, bx + bw - 1] x [by, by + bh - 1]
    x0 = bx - 1 if bx > 0 else 0
    y0 = by - 1 if by > 0 else 0
    x1 = min(bx + bw + 1, mask_size[0])
    y1 = min(by + bh + 1, mask_size[1])
    if x1 > x0 and y1 > y0:
        canvas = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
        cv2.fillPoly(canvas, [poly], 1, offset=(-x0, -y0))
        mode, method = cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        found = cv2.findContours(canvas, mode, method, offset=(x0, y0))[-2]  # cv2 3 & 4
        if found:
            return found[0]
    return poly.reshape(-1, 1, 2).astype(np.int32)


@functools.lru_cache(maxsize=8)
def chi_radius(quantile: float) -> float:
    """sqrt(chi2_2.ppf(quantile)): the redundancy ellipse radius in sigmas (cached: ~40 us)."""
    return math.sqrt(chi2.ppf(quantile, 2))


@dataclass(frozen=True)
class _Ellipses:
    """The redundancy ellipses of all components, (K,) arrays each."""

    angle: np.ndarray  # int64 degrees
    axis0: np.ndarray  # int64 semi-axis along the angle
    axis1: np.ndarray  # int64 semi-axis across it
    major: np.ndarray  # float64 larger semi-axis
    minor: np.ndarray  # float64 smaller semi-axis
    cos: np.ndarray
    sin: np.ndarray

    @classmethod
    def of(cls, cov: np.ndarray, config: EmMergerConfig) -> _Ellipses:
        chi = chi_radius(float(config.ellipsoid_thresh))
        angle, axis0, axis1 = ellipse_params(cov, chi, config.mirror_ellipse_angle)
        major = np.maximum(axis0, axis1).astype(np.float64)
        minor = np.minimum(axis0, axis1).astype(np.float64)
        theta = np.radians(angle.astype(np.float64))
        return cls(angle, axis0, axis1, major, minor, np.cos(theta), np.sin(theta))

    def radius(self, e: np.ndarray, offset: np.ndarray) -> np.ndarray:
        """Mahalanobis radius (1 = on the ellipse) of ``offset`` (P, 2) from ellipses ``e`` (P,);
        NaN for a degenerate ellipse (a zero semi-axis)."""
        u = offset[:, 0] * self.cos[e] + offset[:, 1] * self.sin[e]
        w = -offset[:, 0] * self.sin[e] + offset[:, 1] * self.cos[e]
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.sqrt((u / self.axis0[e]) ** 2 + (w / self.axis1[e]) ** 2)
        return np.where(self.minor[e] > 0, r, np.nan)


def overlapping_pairs(components: Components, region_size: np.ndarray, config: EmMergerConfig):
    """Overlapping component pairs of every region, in removal-walk order.

    For components i < j of one region: score = -inf when either (rounded) centre lies inside or
    on the other's ellipse contour, else a + b - |mu_i - mu_j| (a, b: distance of each centre to
    the other's ellipse contour, cv2.pointPolygonTest), which approximates the gap between the
    ellipses; only negative scores (overlaps) are returned. Clear-cut pairs are decided
    analytically: a centre deep inside the other's ellipse (by more than the raster slack, and
    inside the region) gives -inf, and pairs whose lower-bound distances already make the score
    >= 0 are skipped. Only the remaining borderline pairs are drawn and measured with OpenCV,
    exactly as the original.

    Args:
        components: all regions' components.
        region_size: (C, 2) int64 (width, height) of every region's rectangle.
        config: ellipsoid_thresh, mirror_ellipse_angle, ellipse_delta.

    Returns:
        (i (P,), j (P,), score (P,)): component indices, sorted by (region, score, i, j). Ties in
        score keep (i, j) order (the original's unstable sort left them to chance).
    """
    empty = np.zeros(0, dtype=np.int64)
    region = components.region
    if region.size < 2:
        return empty, empty, np.zeros(0)
    ii, jj = pairs_within_segments(np.bincount(region))
    ellipses = _Ellipses.of(components.cov, config)
    major, minor = ellipses.major, ellipses.minor
    means = components.means.astype(np.float64)
    offset = means[jj] - means[ii]
    dist = np.sqrt(offset[:, 0] * offset[:, 0] + offset[:, 1] * offset[:, 1])
    near = dist <= major[ii] + major[jj] + 2.0 * RASTER_SLACK + 1.0
    ii, jj, dist, offset = ii[near], jj[near], dist[near], offset[near]
    if ii.size == 0:
        return empty, empty, np.zeros(0)

    r_ij = ellipses.radius(ii, offset)  # centre j seen from ellipse i
    r_ji = ellipses.radius(jj, -offset)
    size = region_size[region]
    inside = (means[:, 0] <= size[:, 0] - 1) & (means[:, 1] <= size[:, 1] - 1)  # of the region
    with np.errstate(invalid="ignore"):
        deep_j = inside[jj] & ((1.0 - r_ij) * minor[ii] > RASTER_SLACK)
        deep_i = inside[ii] & ((1.0 - r_ji) * minor[jj] > RASTER_SLACK)
        a_low = np.fmax((r_ij - 1.0) * minor[ii], dist - major[ii]) - RASTER_SLACK
        b_low = np.fmax((r_ji - 1.0) * minor[jj], dist - major[jj]) - RASTER_SLACK
        clearly_apart = (a_low > 0) & (b_low > 0) & (a_low + b_low - dist >= 0)
    contained = deep_i | deep_j
    score = np.full(ii.size, np.nan)
    score[contained] = -np.inf
    score[~contained & clearly_apart] = 1.0
    borderline = np.flatnonzero(np.isnan(score))
    score[borderline] = _measured_scores(
        components, ellipses, size, (ii[borderline], jj[borderline], dist[borderline]), config
    )
    overlap = score < 0
    ii, jj, score = ii[overlap], jj[overlap], score[overlap]
    order = np.lexsort((jj, ii, score, region[ii]))
    return ii[order], jj[order], score[order]


def _measured_scores(components, ellipses, size, pairs, config):
    """The original's score of the given pairs, measured on drawn ellipse contours.

    Args:
        components: all components. ellipses: their ellipses. size: (K, 2) region size of each.
        pairs: (i (P,), j (P,), distance (P,)).
        config: ellipse_delta.

    Returns:
        list of P floats.
    """
    # Flat lists of Python scalars: few objects for the garbage collector, fast to index.
    x, y = components.means[:, 0].tolist(), components.means[:, 1].tolist()
    points = components.means.astype(np.float64).tolist()  # pointPolygonTest needs floats (cv2 4)
    axis0, axis1, angle = ellipses.axis0.tolist(), ellipses.axis1.tolist(), ellipses.angle.tolist()
    width, height = size[:, 0].tolist(), size[:, 1].tolist()
    delta = int(config.ellipse_delta)
    drawn = {}

    def contour(e):  # each ellipse drawn at most once
        found = drawn.get(e)
        if found is None:
            found = drawn[e] = _ellipse_contour(
                (x[e], y[e]), (axis0[e], axis1[e]), angle[e], (width[e], height[e]), delta
            )
        return found

    scores = []
    for i, j, dist in zip(*(p.tolist() for p in pairs)):
        a = -cv2.pointPolygonTest(contour(i), points[j], True)
        if a <= 0:  # -inf whatever b is: contour j need not be drawn for this pair
            scores.append(-math.inf)
            continue
        b = -cv2.pointPolygonTest(contour(j), points[i], True)
        scores.append(-math.inf if b <= 0 else a + b - dist)
    return scores


def walk_redundant(ii, jj, heat):
    """The removal walk: for each pair with neither member removed yet, remove the one with the
    lower heat at its centre (ties remove i).

    Args:
        ii, jj: (P,) component indices, in walk order. heat: indexable heat value per component.

    Returns:
        set of removed component indices.
    """
    removed = set()
    for i, j in zip(ii.tolist(), jj.tolist()):
        if i in removed or j in removed:
            continue
        removed.add(j if heat[j] < heat[i] else i)
    return removed


def remove_redundant(
    components: Components, region_rect: np.ndarray, heat_map: HeatMap, config: EmMergerConfig
) -> np.ndarray:
    """Which components survive the redundancy test, for every region at once.

    Args:
        components: all regions' components.
        region_rect: (C, 4) int64 region rectangles (x, y, w, h), full-resolution pixels.
        heat_map: the image's heat map (the heat at the component centres decides).
        config: the ellipse settings.

    Returns:
        (K,) bool keep mask.
    """
    keep = np.ones(components.region.size, dtype=bool)
    ii, jj, _ = overlapping_pairs(components, region_rect[:, 2:4], config)
    if ii.size == 0:
        return keep
    # Heat at each centre pixel, clamped to the region's rectangle.
    involved = np.unique(np.concatenate([ii, jj]))
    rect = region_rect[components.region[involved]]
    means = components.means[involved]
    px = np.clip(means[:, 0], 0, rect[:, 2] - 1) + rect[:, 0]
    py = np.clip(means[:, 1], 0, rect[:, 3] - 1) + rect[:, 1]
    heat = np.zeros(keep.size)
    heat[involved] = heat_map.quantised_at(px, py)
    # A region with a single overlapping pair needs no walk: the cooler centre goes.
    pair_region = components.region[ii]
    single = np.bincount(pair_region, minlength=region_rect.shape[0])[pair_region] == 1
    si, sj = ii[single], jj[single]
    keep[np.where(heat[sj] < heat[si], sj, si)] = False
    if not single.all():
        keep[list(walk_redundant(ii[~single], jj[~single], heat))] = False
    return keep
