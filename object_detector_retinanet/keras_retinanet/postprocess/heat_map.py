"""The EM-Merger's heat map: detections as Gaussians, their summed density, and its contours.

Implements the first step of the EM-Merger (Goldman et al., CVPR 2019, §4): every detection
becomes a Gaussian (centre of its box, sigma = a quarter of its size), their kernels are summed
into a heat map, and the external contours of the thresholded map outline the *regions* that the
rest of the merger resolves one by one. This module owns:

- :func:`shrink_boxes`: per-detection Gaussian parameters (:class:`Gaussians`);
- :func:`render_heat_map` and :func:`heat_values_at`: the map, and exact values at any pixel;
- :func:`quantise_heat` and :func:`heat_mask`: the original's 0..255 quantisation and threshold;
- :func:`build_heat_map` and :func:`find_contours`: the map of one image, as the merger reads it,
  and the bounding rectangle and area of every contour.

Deviation for speed (exact where it matters; docs/em-merger.md): the map is sampled every ``s``
pixels, ``s`` chosen from the box sizes (``s = 1`` is the original's full-resolution map). Each
sample holds the exact full-resolution value at the centre of its ``s x s`` block, contour
rectangles map back as whole blocks, contour areas are corrected to full resolution
(:func:`full_resolution_area`), and the heat values read later are exact full-resolution values.

NumPy, SciPy (one sparse product) and OpenCV; no file I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import sparse

from object_detector_retinanet.keras_retinanet.config import EmMergerConfig
from object_detector_retinanet.keras_retinanet.postprocess.arrays import (
    points_in_rects,
    ragged_arange,
)

# cv2.normalize treats a range <= DBL_EPSILON as a constant input (and maps it to all zeros).
DBL_EPSILON = np.finfo(np.float64).eps


@dataclass
class Gaussians:
    """The Gaussian of every detection (all fields (N,) arrays; boxes are truncated integers).

    Attributes:
        cx, cy: centre of the *unshrunk* box (may end in .5).
        sx1, sy1, sx2, sy2: the shrunk box (not clipped to the image).
        sigma_x, sigma_y: half the shrunk width and height (about w / 4 and h / 4).
        scale, offset: the kernel painted into the map is ``scale * g - offset`` with ``g`` the
            unit Gaussian on the shrunk box: min-max normalised to [0, confidence].
    """

    cx: np.ndarray
    cy: np.ndarray
    sx1: np.ndarray
    sy1: np.ndarray
    sx2: np.ndarray
    sy2: np.ndarray
    sigma_x: np.ndarray
    sigma_y: np.ndarray
    scale: np.ndarray
    offset: np.ndarray

    def covariances(self) -> np.ndarray:
        """(N, 2, 2) diagonal covariances diag(sigma_x^2, sigma_y^2)."""
        cov = np.zeros((self.cx.shape[0], 2, 2))
        cov[:, 0, 0] = self.sigma_x**2
        cov[:, 1, 1] = self.sigma_y**2
        return cov

    def profile_x(self, det: np.ndarray, px: np.ndarray) -> np.ndarray:
        """Unit kernel factor along x of detections ``det`` at integer columns ``px`` (aligned)."""
        return _axis_profile(self.sx1[det], self.sx2[det] - self.sx1[det], self.sigma_x[det], px)

    def profile_y(self, det: np.ndarray, py: np.ndarray) -> np.ndarray:
        """Unit kernel factor along y of detections ``det`` at integer rows ``py`` (aligned)."""
        return _axis_profile(self.sy1[det], self.sy2[det] - self.sy1[det], self.sigma_y[det], py)


def shrink_boxes(boxes: np.ndarray, confidence: np.ndarray, box_size_factor: float = 0.5):
    """Centres, shrunk boxes, sigmas and kernel normalisation of every detection.

    Args:
        boxes: (N, 4) integer boxes (x1, y1, x2, y2), already truncated.
        confidence: (N,) kernel peak values.
        box_size_factor: 0.5 => w' ~ w / 2 (w = 10 -> shift int(2.5) = 2 -> w' = 6, sigma = 3).

    Returns:
        Gaussians.
    """
    b = np.asarray(boxes, dtype=np.int64)
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    w, h = x2 - x1, y2 - y1
    cx = x1 + w / 2.0
    cy = y1 + h / 2.0
    shift_x = (w * (1.0 - box_size_factor) / 2.0).astype(np.int64)  # truncation, as astype(int)
    shift_y = (h * (1.0 - box_size_factor) / 2.0).astype(np.int64)
    sx1, sx2, sy1, sy2 = x1 + shift_x, x2 - shift_x, y1 + shift_y, y2 - shift_y
    shrunk_w, shrunk_h = sx2 - sx1, sy2 - sy1
    peak = np.exp(-_innermost_exponent(shrunk_w) - _innermost_exponent(shrunk_h))
    edge = np.exp(-1.0)
    kernel_range = peak - edge
    conf = np.asarray(confidence, dtype=np.float64)
    # cv2.normalize(NORM_MINMAX) to [0, confidence]. QUIRK: a constant kernel (w', h' <= 2) has a
    # range <= DBL_EPSILON and becomes all zeros.
    with np.errstate(divide="ignore", invalid="ignore"):
        safe_range = np.where(kernel_range > 0, kernel_range, 1.0)
        scale = np.where(kernel_range > DBL_EPSILON, conf / safe_range, 0.0)
    return Gaussians(
        cx, cy, sx1, sy1, sx2, sy2, shrunk_w / 2.0, shrunk_h / 2.0, scale, scale * edge
    )


def _innermost_exponent(n: np.ndarray) -> np.ndarray:
    """x^2 / (2 sigma^2) at the kernel sample nearest the centre, for n samples per side.

    The kernel exp(-x^2/(2 sx^2) - y^2/(2 sy^2)) is sampled on linspace(-w'/2, w'/2, w'), so the
    edge samples sit at +-1 sigma (exponent 0.5) and the innermost ones at 0 (odd n) or at
    +-w'/(2 (w' - 1)) (even n); a single sample (n = 1) sits at -0.5, the edge.
    """
    nn = np.maximum(n, 2).astype(np.float64)
    even = 1.0 / (2.0 * (nn - 1.0) ** 2)
    return np.where(n <= 1, 0.5, np.where(n % 2 == 1, 0.0, even))


def _axis_profile(lo, size, sigma, pos):
    """Kernel factor exp(-(l / (sqrt 2 sigma))^2) at integer pixel pos of a box starting at lo."""
    size = size.astype(np.float64)
    step = np.where(size > 1, size / np.maximum(size - 1.0, 1.0), 0.0)
    t = (pos - lo).astype(np.float64)
    lin = np.where(t >= size - 1, size / 2.0, -size / 2.0 + t * step)  # linspace, exact end
    z = lin / (np.sqrt(2.0) * sigma)
    return np.exp(-(z * z))


def choose_downscale(gaussians: Gaussians, config: EmMergerConfig) -> int:
    """Heat-map sampling step s (1 = full resolution), from the median shrunk box side."""
    if config.heat_map_downscale is not None:
        return int(config.heat_map_downscale)
    side = np.minimum(gaussians.sx2 - gaussians.sx1, gaussians.sy2 - gaussians.sy1)
    side = side[side > 0]
    if side.size == 0:
        return 1
    return max(1, int(np.median(side) / config.heat_map_samples_per_box))


def _sample_range(lo, hi, s, n_samples):
    """First index c, and count, of the samples at pixels c*s + s//2 inside [lo, hi)."""
    half = s // 2
    first = np.maximum(-((half - lo) // s), 0)  # ceil((lo - half) / s)
    last = np.minimum((hi - 1 - half) // s, n_samples - 1)
    return first, np.maximum(last - first + 1, 0)


def render_heat_map(gaussians: Gaussians, height: int, width: int, s: int) -> np.ndarray:
    """Sum of the min-max normalised kernels, sampled at the centres of s x s blocks.

    With s = 1 this is the original's full-resolution float64 map. Each shrunk box is clipped to
    the map and its kernel cropped to match (the original crashed on tiny boxes at the right or
    bottom edge, docs/em-merger.md).

    Args:
        gaussians: the detections' Gaussians.
        height, width: the image size (px).
        s: sampling step (px).

    Returns:
        (Hs, Ws) float64 with Hs = floor((height - 1 - s//2) / s) + 1 (and Ws alike).
    """
    g = gaussians
    half = s // 2
    n_rows = (height - 1 - half) // s + 1
    n_cols = (width - 1 - half) // s + 1
    n = g.cx.shape[0]
    col0, n_col = _sample_range(np.clip(g.sx1, 0, width), np.clip(g.sx2, 0, width), s, n_cols)
    row0, n_row = _sample_range(np.clip(g.sy1, 0, height), np.clip(g.sy2, 0, height), s, n_rows)
    paint = (n_col > 0) & (n_row > 0) & (g.scale > 0)
    n_col = np.where(paint, n_col, 0)
    n_row = np.where(paint, n_row, 0)
    # Separable kernels: the map is sum_i scale_i * gy_i (rows) x gx_i (columns), one sparse
    # product over all detections.
    col_det = np.repeat(np.arange(n), n_col)
    cols = np.repeat(col0, n_col) + ragged_arange(n_col)
    gx = g.profile_x(col_det, cols * s + half)
    row_det = np.repeat(np.arange(n), n_row)
    rows = np.repeat(row0, n_row) + ragged_arange(n_row)
    gy = g.profile_y(row_det, rows * s + half)
    by_row = sparse.csr_matrix((gy * g.scale[row_det], (row_det, rows)), shape=(n, n_rows))
    by_col = sparse.csr_matrix((gx, (col_det, cols)), shape=(n, n_cols))
    heat = (by_row.T @ by_col).toarray()
    # The constant part (- offset over each painted rectangle), via a 2-D difference array.
    painted = np.flatnonzero(paint)
    if painted.size:
        r0, r1 = row0[painted], row0[painted] + n_row[painted]
        c0, c1 = col0[painted], col0[painted] + n_col[painted]
        offset = g.offset[painted]
        stride = n_cols + 1
        corners = np.concatenate(
            [r0 * stride + c0, r0 * stride + c1, r1 * stride + c0, r1 * stride + c1]
        )
        weights = np.concatenate([offset, -offset, -offset, offset])
        diff = np.bincount(corners, weights=weights, minlength=(n_rows + 1) * stride)
        diff = diff.reshape(n_rows + 1, -1)
        np.cumsum(diff, axis=0, out=diff)  # in place: no further map-sized temporaries
        np.cumsum(diff, axis=1, out=diff)
        heat -= diff[:n_rows, :n_cols]
    return heat


def heat_values_at(gaussians: Gaussians, px: np.ndarray, py: np.ndarray, width: int, height: int):
    """Exact full-resolution heat-map values at integer pixels.

    Args:
        gaussians: the detections' Gaussians.
        px, py: (P,) integer pixel coordinates.
        width, height: the image size (px).

    Returns:
        (P,) float64, what :func:`render_heat_map` with s = 1 holds at (py, px).
    """
    g = gaussians
    px = np.asarray(px, dtype=np.int64)
    py = np.asarray(py, dtype=np.int64)
    out = np.zeros(px.shape[0])
    xlo, xhi = np.clip(g.sx1, 0, width), np.clip(g.sx2, 0, width)
    ylo, yhi = np.clip(g.sy1, 0, height), np.clip(g.sy2, 0, height)
    painted = np.flatnonzero((xhi > xlo) & (yhi > ylo) & (g.scale > 0))
    rects = np.stack([xlo[painted], ylo[painted], xhi[painted] - 1, yhi[painted] - 1], axis=1)
    pair_rect, pair_point = points_in_rects(px, py, rects)
    if pair_rect.size == 0:
        return out
    det = painted[pair_rect]
    gx = g.profile_x(det, px[pair_point])
    gy = g.profile_y(det, py[pair_point])
    value = g.scale[det] * gx * gy - g.offset[det]
    return np.bincount(pair_point, weights=value, minlength=px.shape[0])


def _to_0_255_scale(vmin: float, vmax: float) -> float:
    """cv2.normalize(0..255, NORM_MINMAX)'s factor: 255 / (vmax - vmin), 0 for a constant map."""
    value_range = vmax - vmin
    return 255.0 / value_range if value_range > DBL_EPSILON else 0.0


def quantise_heat(values: np.ndarray, vmin: float, vmax: float, threshold: int) -> np.ndarray:
    """The original's 0..255 map: normalise (min-max), round half to even, threshold to zero.

    cv2.normalize(0..255, NORM_MINMAX) -> convertScaleAbs -> threshold(THRESH_TOZERO).

    Args:
        values: heat values, any shape.
        vmin, vmax: the minimum and maximum of the whole map.
        threshold: values <= threshold after rounding become 0.

    Returns:
        float64 array like ``values`` with integer values in {0} U (threshold, 255].
    """
    q = np.clip(np.rint((values - vmin) * _to_0_255_scale(vmin, vmax)), 0, 255)
    return np.where(q > threshold, q, 0.0)


def heat_mask(
    heat: np.ndarray, vmin: float, vmax: float, threshold: int, overwrite: bool = False
) -> np.ndarray:
    """uint8 mask of ``quantise_heat(heat, vmin, vmax, threshold) > 0`` in two passes, not five.

    With x = (heat - vmin) * 255 / (vmax - vmin) in [0, 255] the clip changes nothing, and
    where(q > t, q, 0) > 0 <=> rint(x) > max(t, 0). ``overwrite=True`` reuses ``heat`` as scratch.
    """
    x = heat if overwrite else heat.copy()
    x -= vmin  # the arithmetic of quantise_heat, in place
    x *= _to_0_255_scale(vmin, vmax)
    return (np.rint(x, out=x) > max(threshold, 0)).view(np.uint8)


def full_resolution_area(area: float, perimeter: float, s: int) -> float:
    """Full-resolution cv2.contourArea estimated from the contour of a map sampled every s px.

    A patch of a x b pixels has the pixel-centre polygon area (a - 1)(b - 1); the same patch on
    the s-times coarser grid has area A' = (a/s - 1)(b/s - 1) and perimeter P' = 2(a/s + b/s - 2),
    and s^2 A' + s (s - 1) P' / 2 + (s - 1)^2 = (a - 1)(b - 1) exactly (s = 1: A' itself).
    """
    return s * s * area + s * (s - 1) * perimeter / 2.0 + (s - 1) ** 2


@dataclass(frozen=True)
class HeatMap:
    """The heat map of one image, as the later steps read it.

    Attributes:
        gaussians: the detections' Gaussians it was rendered from.
        height, width: the image size (px).
        downscale: the sampling step s of the rendered map.
        vmin, vmax: minimum and maximum of the rendered map (the 0..255 normalisation).
        threshold: the heat threshold on the 0..255 scale.
        quantised: (height, width) 0..255 map at s = 1, else None (values are then computed).
    """

    gaussians: Gaussians
    height: int
    width: int
    downscale: int
    vmin: float
    vmax: float
    threshold: int
    quantised: np.ndarray | None

    def quantised_at(self, px: np.ndarray, py: np.ndarray) -> np.ndarray:
        """The 0..255 (thresholded) heat at full-resolution pixels (px, py), (P,) each."""
        if self.quantised is not None:
            rows = np.clip(py, 0, self.quantised.shape[0] - 1)
            cols = np.clip(px, 0, self.quantised.shape[1] - 1)
            return self.quantised[rows, cols]
        values = heat_values_at(self.gaussians, px, py, self.width, self.height)
        return quantise_heat(values, self.vmin, self.vmax, self.threshold)


def build_heat_map(
    gaussians: Gaussians,
    height: int,
    width: int,
    config: EmMergerConfig,
    downscale: int | None = None,
) -> tuple[HeatMap, np.ndarray]:
    """Render the heat map of one image and threshold it.

    Args:
        gaussians: the detections' Gaussians.
        height, width: the image size (px).
        config: heat_threshold and the downscale settings.
        downscale: sampling step s; None: :func:`choose_downscale`.

    Returns:
        (HeatMap, mask): the mask is the (Hs, Ws) uint8 map of samples above the threshold.
    """
    s = choose_downscale(gaussians, config) if downscale is None else int(downscale)
    heat = render_heat_map(gaussians, height, width, s)
    vmin, vmax = float(heat.min()), float(heat.max())
    threshold = config.heat_threshold
    if s == 1:
        quantised = quantise_heat(heat, vmin, vmax, threshold)
        mask = (quantised > 0).view(np.uint8)
    else:  # only the mask is kept: later reads compute exact values (HeatMap.quantised_at)
        quantised = None
        mask = heat_mask(heat, vmin, vmax, threshold, overwrite=True)
    return HeatMap(gaussians, height, width, s, vmin, vmax, threshold, quantised), mask


def find_contours(mask: np.ndarray, heat_map: HeatMap) -> tuple[np.ndarray, np.ndarray]:
    """Bounding rectangle and area of every external contour of the thresholded map.

    Args:
        mask: (Hs, Ws) uint8 samples above the threshold (from :func:`build_heat_map`).
        heat_map: the map the mask came from (its size and sampling step).

    Returns:
        (rect (C, 4) int64 (x, y, w, h), area (C,) float64) in full-resolution pixels and in
        OpenCV's contour order: cv2.boundingRect and cv2.contourArea (estimated from the sampled
        contour with :func:`full_resolution_area` when s > 1, where rectangles cover whole
        s x s blocks, clipped to the image).
    """
    s = heat_map.downscale
    contours = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[-2]  # cv2 3 & 4
    rect = np.array([cv2.boundingRect(c) for c in contours], dtype=np.int64).reshape(-1, 4)
    if s == 1:
        area = np.array([cv2.contourArea(c) for c in contours], dtype=np.float64)
        return rect, area
    area = np.array(
        [full_resolution_area(cv2.contourArea(c), cv2.arcLength(c, True), s) for c in contours],
        dtype=np.float64,
    )
    rect = rect * s
    rect[:, 2] = np.minimum(rect[:, 0] + rect[:, 2], heat_map.width) - rect[:, 0]
    rect[:, 3] = np.minimum(rect[:, 1] + rect[:, 3], heat_map.height) - rect[:, 1]
    return rect, area
