"""EM-Merger: one detection per object from many overlapping raw detections (paper §4).

Goldman et al. (CVPR 2019) replace NMS with a merger that treats the raw detections of an image as
a mixture of Gaussians and resolves it into the objects it holds. This module owns that pipeline,
one named step after the other (:func:`merge_detections` reads as the list below):

1. heat map: every detection becomes a Gaussian, summed into a heat map
   (:mod:`.heat_map`);
2. candidate regions: the external contours of the thresholded map; a region's members are the
   detections whose centre lies in the contour's bounding rectangle (:func:`find_regions`);
3. per-region K estimate and collapse: K = region area / median member area; the members'
   mixture is collapsed to K Gaussians (:mod:`.mog`), or, where that is out of budget, the
   members go through NMS (:func:`collapse_regions`);
4. redundancy removal: components whose ellipses overlap lose the cooler one
   (:mod:`.redundancy`);
5. candidate boxes: a 2-sigma box per surviving component (:func:`candidate_boxes`);
6. assignment and best pick: each candidate claims the unclaimed detections whose centres it
   contains and keeps the best of them, unchanged (:func:`assign_detections`, :func:`pick_best`,
   :mod:`.selection`);
7. final suppression: greedy IoMin suppression across regions (:func:`final_suppression`).

What is kept from the original code on purpose (marked ``QUIRK``/``KEEP``), which of its bugs are
fixed, and where this port deviates for speed: docs/em-merger.md. Deterministic (budgets count
work, not time), no file I/O, no global state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from multiprocessing import get_context

import numpy as np

from object_detector_retinanet.keras_retinanet.config import SELECTIONS, EmMergerConfig
from object_detector_retinanet.keras_retinanet.postprocess.arrays import (
    points_in_rects,
    segment_median,
    segment_starts,
)
from object_detector_retinanet.keras_retinanet.postprocess.heat_map import (
    Gaussians,
    HeatMap,
    build_heat_map,
    find_contours,
    shrink_boxes,
)
from object_detector_retinanet.keras_retinanet.postprocess.mog import (
    INIT_BUDGET,
    MSG_EM_BUDGET,
    CollapseBudget,
    Mixture,
    collapse_batch,
    init_costs,
    m_step,
)
from object_detector_retinanet.keras_retinanet.postprocess.redundancy import (
    Components,
    remove_redundant,
)
from object_detector_retinanet.keras_retinanet.postprocess.selection import selection_scores
from object_detector_retinanet.keras_retinanet.utils.boxes import non_max_suppression

__all__ = [
    "SELECTIONS",
    "EmMergerConfig",
    "Regions",
    "candidate_boxes",
    "final_suppression",
    "find_regions",
    "merge_detections",
    "merge_many",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# The merger
# --------------------------------------------------------------------------------------------


def merge_detections(detections: np.ndarray, image_shape, config: EmMergerConfig | None = None):
    """Merge the raw detections of one image into one detection per object.

    Args:
        detections: (N, 6+) [x1, y1, x2, y2, confidence, hard_score, ...] in original-image
            pixels; extra columns are carried through untouched. N may be 0.
        image_shape: (height, width) of the original image (the original re-read the image).
        config: EmMergerConfig; None => defaults (the original's effective constants).

    Returns:
        (M, same columns) rows of the input: the kept original detections, unchanged, in the
        order of the final suppression (region, then component order).

    Raises:
        ValueError: on a bad shape, non-finite values or an inverted box (naming the row).
    """
    config = config if config is not None else EmMergerConfig()
    rows = _validated(detections, image_shape)
    if rows.ndim != 2 or rows.shape[0] == 0:  # the original crashed on an empty image
        return rows.reshape(0, rows.shape[1] if rows.ndim == 2 else 6).copy()
    height, width = int(image_shape[0]), int(image_shape[1])
    detections = _Detections.of(_in_canonical_order(rows), config)
    heat_map, mask = build_heat_map(detections.gaussians, height, width, config)
    regions = find_regions(heat_map, mask, detections.boxes, config)
    components, fallback = collapse_regions(regions, detections, config)
    components = components.subset(remove_redundant(components, regions.rect, heat_map, config))
    candidates = _candidates(components, fallback, regions, config)
    owner = assign_detections(detections.gaussians, candidates)
    picks = pick_best(detections, candidates, owner, config)
    if picks.size == 0:
        return detections.rows[:0].copy()
    return detections.rows[picks[final_suppression(detections.rows[picks], config)]]


def merge_many(
    list_of_arrays, shapes, config: EmMergerConfig | None = None, processes: int | None = None
) -> list:
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


def _merge_one(job):
    detections, shape, config = job
    return merge_detections(detections, shape, config)


def _validated(detections, image_shape) -> np.ndarray:
    """The detections as an array; ValueError (naming the row) on anything the merger rejects."""
    arr = np.asarray(detections)
    empty = (arr.ndim == 2 and arr.shape[0] == 0) or (arr.ndim == 1 and arr.size == 0)
    if not empty and (arr.ndim != 2 or arr.shape[1] < 6):
        raise ValueError(
            "merge_detections: detections must be (N, 6+) [x1, y1, x2, y2, confidence, "
            f"hard_score, ...], got shape {arr.shape}"
        )
    if len(tuple(image_shape)) < 2 or int(image_shape[0]) <= 0 or int(image_shape[1]) <= 0:
        raise ValueError(
            f"merge_detections: image_shape must be (height, width) > 0, got {tuple(image_shape)}"
        )
    if arr.ndim == 2 and arr.shape[0] > 0:
        core = arr[:, :6].astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(core).all(axis=1))
        if bad.size:
            raise ValueError(f"merge_detections: row {int(bad[0])} has a non-finite box or score")
        inverted = np.flatnonzero((core[:, 2] < core[:, 0]) | (core[:, 3] < core[:, 1]))
        if inverted.size:
            r = int(inverted[0])
            raise ValueError(f"merge_detections: row {r} has x2 < x1 or y2 < y1: {core[r, :4]}")
    return arr


def _in_canonical_order(rows: np.ndarray) -> np.ndarray:
    """The rows by confidence descending (what predict feeds), ties by box and hard score, so that
    the result does not depend on the input row order. Rows already in that order (as predict's
    are, barring exact ties) come back as they are, without a sort."""
    keys = (-rows[:, 4], rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 5])
    if _lexicographically_sorted(keys):
        return rows
    return rows[np.lexsort(keys[::-1])]


def _lexicographically_sorted(keys) -> bool:
    """Whether consecutive rows are non-decreasing in (keys[0], keys[1], ...), each key (N,)."""
    decided = np.zeros(keys[0].size - 1 if keys[0].size else 0, dtype=bool)
    for key in keys:
        before, after = key[:-1], key[1:]
        if (~decided & (before > after)).any():
            return False
        decided |= before < after
    return True


@dataclass(frozen=True)
class _Detections:
    """The detections of one image in canonical order, and what the steps derive from them.

    Attributes:
        rows: (N, C) the input rows.
        boxes: (N, 4) int64 boxes truncated to integers (QUIRK: as the original's astype(int)).
        confidence: (N,) float64.
        gaussians: their Gaussians (step 1).
        cov: (N, 2, 2) their covariances.
    """

    rows: np.ndarray
    boxes: np.ndarray
    confidence: np.ndarray
    gaussians: Gaussians
    cov: np.ndarray

    @classmethod
    def of(cls, rows: np.ndarray, config: EmMergerConfig) -> _Detections:
        confidence = rows[:, 4].astype(np.float64)
        boxes = np.trunc(rows[:, :4].astype(np.float64)).astype(np.int64)
        gaussians = shrink_boxes(boxes, confidence, config.box_size_factor)
        return cls(rows, boxes, confidence, gaussians, gaussians.covariances())


# --------------------------------------------------------------------------------------------
# Step 2: candidate regions and their K
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Regions:
    """The candidate regions of one image: one per external contour of the thresholded heat map.

    Attributes:
        rect: (C, 4) int64 bounding rectangles (x, y, w, h) in full-resolution pixels.
        area: (C,) contour area (cv2.contourArea at full resolution, or its estimate).
        count: (C,) number of members.
        k: (C,) estimated number of objects.
        valid: (C,) has members and a rectangle wider and taller than min_contour_side.
        member_region: (P,) region of each (region, detection) membership.
        member_detection: (P,) detection of each membership; sorted by region, then detection.
    """

    rect: np.ndarray
    area: np.ndarray
    count: np.ndarray
    k: np.ndarray
    valid: np.ndarray
    member_region: np.ndarray
    member_detection: np.ndarray

    def members(self, selected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(region (P',), detection (P',)) memberships of the regions in a (C,) boolean mask."""
        pick = selected[self.member_region]
        return self.member_region[pick], self.member_detection[pick]

    def members_of(self, region: int) -> np.ndarray:
        """Detections of one region, ascending."""
        start = segment_starts(self.count)[region]
        return self.member_detection[start : start + self.count[region]]


def find_regions(
    heat_map: HeatMap, mask: np.ndarray, boxes: np.ndarray, config: EmMergerConfig
) -> Regions:
    """The regions of the thresholded heat map, their members and their K.

    Args:
        heat_map: the image's heat map (its Gaussians give the detections' centres).
        mask: the thresholded map from :func:`.heat_map.build_heat_map`.
        boxes: (N, 4) int64 truncated boxes.
        config: box_size_factor, max_k, min_contour_side.

    Returns:
        Regions, in OpenCV's contour order.
    """
    rect, area = find_contours(mask, heat_map)
    n_regions = rect.shape[0]
    x, y, w, h = rect[:, 0], rect[:, 1], rect[:, 2], rect[:, 3]
    # QUIRK: members are the detections whose ORIGINAL centre lies in the bounding rectangle,
    # bounds included; the contour is ignored, so a detection may join several regions
    # (docs/em-merger.md).
    g = heat_map.gaussians
    member_region, member_detection = points_in_rects(
        g.cx, g.cy, np.stack([x, y, x + w, y + h], axis=1)
    )
    count = np.bincount(member_region, minlength=n_regions)
    # K = round(area / median member area), the median of (f w)(f h) with the exact factor f
    # (not the integer shrink), capped at max_k, at least 1.
    f = config.box_size_factor
    box_w = (boxes[:, 2] - boxes[:, 0]).astype(np.float64)
    box_h = (boxes[:, 3] - boxes[:, 1]).astype(np.float64)
    shrunk_area = (box_w * f) * (box_h * f)
    median = segment_median(shrunk_area[member_detection], member_region, n_regions)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.round(area / np.where(median > 0, median, 1.0))
        estimate = np.where(median > 0, np.minimum(ratio, config.max_k), 0.0)
    k = np.maximum(1, estimate.astype(np.int64))
    side = config.min_contour_side
    valid = (count > 0) & (w > side) & (h > side)
    return Regions(rect, area, count, k, valid, member_region, member_detection)


# --------------------------------------------------------------------------------------------
# Step 3: per-region collapse (or NMS fallback)
# --------------------------------------------------------------------------------------------


def collapse_regions(regions: Regions, detections: _Detections, config: EmMergerConfig):
    """The Gaussian components of every valid region, or its NMS boxes where EM is not run.

    Four cases by the member count n and the estimate K:

    - n <= K: the members' own Gaussians are the components (the original produced nothing,
      dropping isolated detections; docs/em-merger.md);
    - K <= min_k, or the agglomerative init over budget: NMS on the members (the original's
      fallback, with its timeout replaced by a work budget);
    - K = 1: the members' moment-matched Gaussian (what the collapse converges to);
    - otherwise: the collapse of the members' mixture to K components (:mod:`.mog`).

    Args:
        regions: the image's regions.
        detections: the image's detections.
        config: the merger settings.

    Returns:
        (components sorted by region (component order within), fallback {region: (B, 4) int64
        boxes}).
    """
    n, k, valid = regions.count, regions.k, regions.valid
    over_budget = init_costs(n, k) > config.init_budget
    to_nms = valid & (n > k) & ((k <= config.min_k) | over_budget)
    one_object = valid & (n > k) & (k == 1) & ~to_nms
    many_objects = valid & (n > k) & (k > 1) & ~to_nms
    few_members = valid & (n <= k)

    parts = [_moment_matched(regions, one_object, detections, config)]
    fallback = {r: _fallback_boxes(regions, r, detections, config) for r in _indices(to_nms)}
    parts.append(_member_gaussians(regions, few_members, detections))
    collapsed, failed = _collapsed(regions, many_objects, detections, config)
    parts.append(collapsed)
    fallback.update({r: _fallback_boxes(regions, r, detections, config) for r in failed})
    components = Mixture(*(np.concatenate(values) for values in zip(*parts)))
    order = np.argsort(components.region, kind="stable")
    return _rounded(components.take(order)), fallback


def _indices(mask: np.ndarray) -> list:
    return np.flatnonzero(mask).tolist()


def _em_members(regions: Regions, selected: np.ndarray, detections: _Detections):
    """The members of the selected regions as a mixture, numbered 0..G-1 in region order.

    EM weights alpha = confidence / its sum over the region (QUIRK: the combined confidence, not
    the paper's Soft-IoU score); uniform 1 / n when a region's confidences sum to 0. Means are
    local to the region's rectangle.

    Returns:
        (members Mixture, the selected regions (G,) in order).
    """
    chosen = np.flatnonzero(selected)
    region, det = regions.members(selected)
    position = np.searchsorted(chosen, region)
    conf = detections.confidence[det]
    total = np.bincount(position, weights=conf, minlength=chosen.size)[position]
    count = np.bincount(position, minlength=chosen.size)[position]
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.where(total > 0, conf / total, 1.0 / count.astype(np.float64))
    g = detections.gaussians
    mean = np.stack([g.cx[det] - regions.rect[region, 0], g.cy[det] - regions.rect[region, 1]], 1)
    return Mixture(alpha, mean, detections.cov[det], position), chosen


def _member_gaussians(regions: Regions, selected: np.ndarray, detections: _Detections):
    """Components of the regions with n <= K: their members' own Gaussians."""
    members, chosen = _em_members(regions, selected, detections)
    return members._replace(region=chosen[members.region])


def _moment_matched(regions, selected, detections, config):
    """Components of the regions with K = 1: the moment-matched Gaussian of their members.

    The agglomerative init merges every member into it and hard EM confirms it at its second
    iteration; that result is one M-step with every member assigned to the one component.
    """
    members, chosen = _em_members(regions, selected, detections)
    n = chosen.size
    placeholder = Mixture.of(np.zeros(n), np.zeros((n, 2)), np.zeros((n, 2, 2)), chosen)
    # The agglomerative init and EM agree here (both give the moment-matched Gaussian), so EM's
    # budget (n work units per E-step, three E-steps to confirm) only decides the message.
    over = 3.0 * regions.count[chosen] > config.em_budget
    for r in chosen[over].tolist():
        logger.warning("region %d n=%d k=1: %s", r, regions.count[r], MSG_EM_BUDGET)
    return m_step(members, members.region, placeholder)


def _collapsed(regions, selected, detections, config):
    """Components of the regions with K > 1 and n > K: the collapse of their members' mixture.

    Returns:
        (components Mixture, regions whose collapse failed (none: they were sent to NMS before)).
    """
    members, chosen = _em_members(regions, selected, detections)
    batch = collapse_batch(members, regions.k[chosen], CollapseBudget.from_config(config))
    failed = [int(chosen[i]) for i, status in enumerate(batch.status) if status == INIT_BUDGET]
    components = batch.components
    return components._replace(region=chosen[components.region]), failed


def _fallback_boxes(regions, region, detections, config):
    """The NMS fallback of one region: IoMin NMS on its members (QUIRK: IoMin, not IoU; every box
    is compared, the original never compared the last one; docs/em-merger.md). The survivors
    become candidates."""
    members = regions.members_of(region)
    logger.warning(
        "region %d n=%d k=%d: k <= min_k or EM failed - falling back to NMS",
        region,
        regions.count[region],
        regions.k[region],
    )
    boxes = detections.boxes[members]
    keep = non_max_suppression(
        boxes.astype(np.float64),
        detections.confidence[members],
        config.fallback_nms_threshold,
        overlap="iomin",
    )
    return boxes[keep].astype(np.int64)


# --------------------------------------------------------------------------------------------
# Step 5: candidate boxes
# --------------------------------------------------------------------------------------------


def candidate_boxes(mu_r, cov, offset, sub_size, sigmas=2.0):
    """2-sigma axis-aligned boxes of the components, clipped to the region's rectangle.

    QUIRK: a rectangle of +-2 sigma_x by +-2 sigma_y, not the paper's 2-sigma ellipse.

    Args:
        mu_r: (K, 2) rounded integer local means. cov: (K, 2, 2).
        offset: (K, 2) region rectangle origin. sub_size: (K, 2) rectangle (width, height).
        sigmas: half-size in sigmas.

    Returns:
        (K, 4) int64 absolute boxes (not yet filtered by size).
    """
    with np.errstate(invalid="ignore"):
        sx = np.sqrt(cov[:, 0, 0])
        sy = np.sqrt(cov[:, 1, 1])
    x = mu_r[:, 0].astype(np.float64)
    y = mu_r[:, 1].astype(np.float64)
    # Python's max(0, nan) = 0 and min(W, nan) = W: np.fmax / np.fmin have the same semantics.
    x1 = np.round(np.fmax(0.0, x - sigmas * sx))
    y1 = np.round(np.fmax(0.0, y - sigmas * sy))
    x2 = np.round(np.fmin(sub_size[:, 0], x + sigmas * sx))
    y2 = np.round(np.fmin(sub_size[:, 1], y + sigmas * sy))
    local = np.stack([x1, y1, x2, y2], axis=1).astype(np.int64)
    return local + np.concatenate([offset, offset], axis=1).astype(np.int64)


def _rounded(components: Mixture) -> Components:
    """The components with their means rounded to pixels (NaN means to 0)."""
    with np.errstate(invalid="ignore"):
        means = np.round(np.nan_to_num(components.mean, nan=0.0)).astype(np.int64)
    return Components(means, components.cov, components.region.astype(np.int64))


def _candidates(components: Components, fallback: dict, regions: Regions, config) -> np.ndarray:
    """Every candidate box wider and taller than min_box_size, in region order, each region's
    component boxes (or fallback boxes) in order.

    Returns:
        (M, 4) int64 boxes.
    """
    rect = regions.rect[components.region]
    size = rect[:, 2:4].astype(np.float64)
    sigmas = config.candidate_sigmas
    boxes = [candidate_boxes(components.means, components.cov, rect[:, :2], size, sigmas)]
    region = [components.region]
    for r, fallback_boxes in fallback.items():
        boxes.append(fallback_boxes.reshape(-1, 4))
        region.append(np.full(len(fallback_boxes), r, dtype=np.int64))
    boxes, region = np.concatenate(boxes).astype(np.int64), np.concatenate(region)
    big = config.min_box_size
    wide = (boxes[:, 2] - boxes[:, 0] > big) & (boxes[:, 3] - boxes[:, 1] > big)
    boxes, region = boxes[wide], region[wide]
    return boxes[np.argsort(region, kind="stable")]


# --------------------------------------------------------------------------------------------
# Step 6: assignment and best pick
# --------------------------------------------------------------------------------------------


def assign_detections(gaussians: Gaussians, candidates: np.ndarray) -> np.ndarray:
    """Greedy first-come assignment (KEEP): each detection goes to the first candidate (in order)
    whose box contains its centre, bounds included.

    Args:
        gaussians: the detections' Gaussians (their centres).
        candidates: (M, 4) candidate boxes, in order.

    Returns:
        (N,) int64 candidate of every detection, -1 when none claims it.
    """
    owner = np.full(gaussians.cx.shape[0], -1, dtype=np.int64)
    cand, det = points_in_rects(gaussians.cx, gaussians.cy, candidates.astype(np.float64))
    if det.size:
        by_detection = np.lexsort((cand, det))
        det, cand = det[by_detection], cand[by_detection]
        first = np.r_[True, det[1:] != det[:-1]]
        owner[det[first]] = cand[first]
    return owner


def pick_best(detections: _Detections, candidates: np.ndarray, owner: np.ndarray, config):
    """The best detection of every candidate that claims any, under ``config.selection``.

    Ties go to the first detection in canonical order (the highest confidence). Candidates that
    claim nothing are dropped.

    Returns:
        (M',) int64 detection indices, in candidate order.
    """
    score = selection_scores(detections.rows, detections.boxes, candidates, owner, config)
    claimed = np.flatnonzero(owner >= 0)
    if claimed.size == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((claimed, -score[claimed], owner[claimed]))
    owners = owner[claimed][order]
    first = np.r_[True, owners[1:] != owners[:-1]]
    return claimed[order][first]


# --------------------------------------------------------------------------------------------
# Step 7: final suppression
# --------------------------------------------------------------------------------------------


def final_suppression(rows: np.ndarray, config: EmMergerConfig | None = None) -> np.ndarray:
    """Greedy suppression of the picked detections across regions.

    QUIRK: overlap = intersection / min(area) on the truncated integer boxes, suppressed at >= 0.3,
    ordered by confidence; survivors stay in their given (candidate) order. Every remaining box is
    compared (the original never compared the last one, so with two candidates nothing was ever
    suppressed; docs/em-merger.md).

    Args:
        rows: (M, 6+) picked detections in candidate order.
        config: EmMergerConfig (final_nms_threshold).

    Returns:
        (K,) int64 indices of the kept rows, ascending.
    """
    config = config if config is not None else EmMergerConfig()
    rows = np.asarray(rows)
    boxes = np.trunc(rows[:, :4].astype(np.float64))
    confidence = rows[:, 4].astype(np.float64)
    return non_max_suppression(boxes, confidence, config.final_nms_threshold, overlap="iomin")
