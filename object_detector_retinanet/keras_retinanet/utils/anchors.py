"""RetinaNet anchors, corner-offset box coding and training targets for both stages, in NumPy.

Implements §5.3 (anchor generation: sizes 32..512, strides 8..128, ratios (0.5, 1, 2),
scales 2^(0, 1/3, 2/3), centres at ``(i + 0.5) * stride``) and §6 (anchor assignment and the
stage-1 / stage-2 targets of Goldman et al., CVPR 2019, which reuses RetinaNet's assignment for the
detector and trains the Soft-IoU head against the matched ground-truth box). The graph-side
``Anchors`` / ``RegressBoxes`` layers reuse :func:`generate_anchors` and mirror
:func:`bbox_transform_inv`. Constants come from ``config.AnchorConfig`` / ``config.TargetConfig``.

Target packing contract (the one place it is stated; losses and the generator rely on it):

* Anchor state: ``-1`` ignore, ``0`` background, ``1`` positive (§6.1). An anchor's state
  comes from its maximum IoU over the image's GT boxes: ``< negative_overlap`` (0.4) background,
  ``>= positive_overlap`` (0.5) positive, in between ignore. No forced matching. Anchors whose
  centre ``((x1 + x2) / 2, (y1 + y2) / 2)`` has ``cx >= W`` or ``cy >= H`` of the real, un-padded
  image are ignore, whatever their overlap (also in images with zero GT boxes, whose other anchors
  are all background).
* Stage 1, ``config.REGRESSION``: ``(B, N, 5)`` float32, columns 0..3 the corner offsets
  :func:`bbox_transform` of the anchor towards its matched GT box, column 4 the state.
  ``config.CLASSIFICATION``: ``(B, N, C)`` float32; a positive anchor has 1 in its GT's class
  column and 0 elsewhere, a background anchor all 0, an ignored anchor all -1, so the state is
  ``max(labels, axis=2)`` (what the focal loss uses).
* Stage 2, ``config.IOU_REGRESSION_OUTPUT``: ``(B, N, 5)`` float32, columns 0..3 the *absolute*
  ``(x1, y1, x2, y2)`` of the matched GT box in network-input pixels, column 4 the state.
* Matched GT: the first GT box (lowest index) attaining the anchor's maximum IoU, as ``np.argmax``
  over the full IoU row. It is defined only for anchors with max IoU ``>= negative_overlap``
  (positive or ignore); for background anchors (max IoU < 0.4, zero overlap included) there is no
  matched box and columns 0..3 are 0 in both stages. The losses read those columns only for
  positive anchors (§7.2, §7.3), so this is loss-equivalent to the original, which filled
  them from ``argmax`` of a row of small IoUs (GT 0 for a zero row).

Speed: the assignment never forms the ``(N, M)`` IoU matrix. For the default pyramid it derives, per
level, base anchor and GT box, the rectangle of grid cells where IoU >= ``negative_overlap`` is
possible (IoU >= t needs intersection >= t / (1 + t) * (area_a + area_g)), and computes exact
float64 IoUs only there (:func:`boxes.paired_overlap`, the same arithmetic as
:func:`boxes.compute_overlap`). States and matched boxes are identical to the brute-force
assignment (tests/utils/test_anchors.py proves it on random boxes). Other anchor arrays fall back to
an exact chunked computation.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from object_detector_retinanet.keras_retinanet import config
from object_detector_retinanet.keras_retinanet.config import AnchorConfig, TargetConfig
from object_detector_retinanet.keras_retinanet.utils.boxes import compute_overlap, paired_overlap

__all__ = [
    "anchor_targets_bbox",
    "anchors_for_shape",
    "bbox_transform",
    "bbox_transform_inv",
    "generate_anchors",
    "guess_shapes",
    "iou_targets",
    "shift",
    "stage1_targets",
    "stage2_targets",
]

DEFAULT_PYRAMID_LEVELS = (3, 4, 5, 6, 7)  # P3..P7 (§5.2)
_CHUNK = 8192  # anchors per block in the exact fallback assignment
_REL_SLACK = 1e-9  # relative slack on the culling bounds (they only need to be conservative)
_ABS_SLACK = 1e-6  # pixels of slack on the culling bounds


# --------------------------------------------------------------------------------------------
# Anchor generation (§5.3, KEEP)
# --------------------------------------------------------------------------------------------


def generate_anchors(
    base_size: float = 16,
    ratios: tuple[float, ...] | np.ndarray | None = None,
    scales: tuple[float, ...] | np.ndarray | None = None,
) -> np.ndarray:
    """Base anchors centred on (0, 0) for one pyramid level.

    Each anchor has side ``base_size * scale`` (area = side**2) and ratio ``r = h / w``, so
    ``w = sqrt(area / r)`` and ``h = w * r``. The ratio is the outer loop and the scale the inner
    one: row ``ratio_idx * len(scales) + scale_idx`` (§5.3).

    Args:
        base_size: anchor side at scale 1 (32 for P3 ... 512 for P7).
        ratios: ``h / w`` ratios; None means ``AnchorConfig().ratios`` (B26: None is allowed).
        scales: side multipliers; None means ``AnchorConfig().scales``.

    Returns:
        ``(len(ratios) * len(scales), 4)`` float64 boxes ``(-w/2, -h/2, w/2, h/2)``.
    """
    defaults = AnchorConfig()
    r = np.asarray(defaults.ratios if ratios is None else ratios, dtype=np.float64).reshape(-1)
    s = np.asarray(defaults.scales if scales is None else scales, dtype=np.float64).reshape(-1)
    side = base_size * np.tile(s, len(r))  # inner loop: scale
    ratio = np.repeat(r, len(s))  # outer loop: ratio
    w = np.sqrt(side * side / ratio)
    h = w * ratio
    return np.stack([-0.5 * w, -0.5 * h, 0.5 * w, 0.5 * h], axis=1)


def shift(shape: tuple[int, int], stride: float, anchors: np.ndarray) -> np.ndarray:
    """Replicate base anchors over a feature map, centres at ``((ix + 0.5) * s, (iy + 0.5) * s)``.

    KEEP: half a stride in from the origin (keras-hub and older torchvision use ``i * stride``).

    Args:
        shape: feature-map ``(H, W)``.
        stride: feature stride in input pixels.
        anchors: ``(A, 4)`` base anchors from :func:`generate_anchors`.

    Returns:
        ``(H * W * A, 4)`` float64, ordered row y, then column x, then the A anchors (matches the
        head reshape ``(H, W, A * c) -> (-1, c)``).
    """
    base = np.asarray(anchors, dtype=np.float64)
    cx = (np.arange(int(shape[1]), dtype=np.float64) + 0.5) * stride
    cy = (np.arange(int(shape[0]), dtype=np.float64) + 0.5) * stride
    sx, sy = np.meshgrid(cx, cy)  # (H, W), x varies fastest
    shifts = np.stack([sx.ravel(), sy.ravel(), sx.ravel(), sy.ravel()], axis=1)  # (H*W, 4)
    return (base[None, :, :] + shifts[:, None, :]).reshape(-1, 4)


def guess_shapes(
    image_shape: tuple[int, ...], pyramid_levels: tuple[int, ...] = DEFAULT_PYRAMID_LEVELS
) -> list[tuple[int, int]]:
    """Feature-map shapes for an input: ``ceil(H / 2**l) x ceil(W / 2**l)`` per level (§5.3).

    Args:
        image_shape: ``(H, W)`` or ``(H, W, C)`` of the (padded) network input.
        pyramid_levels: levels l, 3..7 by default.

    Returns:
        One ``(h, w)`` per level.
    """
    h, w = int(image_shape[0]), int(image_shape[1])
    return [(-(-h // 2**lvl), -(-w // 2**lvl)) for lvl in pyramid_levels]


def _level_params(
    pyramid_levels: tuple[int, ...], anchor_config: AnchorConfig
) -> list[tuple[int, float, float]]:
    """(level, size, stride) per level; the config's i-th size/stride belongs to the i-th level."""
    levels = tuple(int(lvl) for lvl in pyramid_levels)
    if len(levels) != len(anchor_config.sizes) or len(levels) != len(anchor_config.strides):
        raise ValueError(
            f"pyramid_levels {levels} needs one size and stride each, but the anchor config has "
            f"sizes {anchor_config.sizes} and strides {anchor_config.strides}"
        )
    return list(zip(levels, anchor_config.sizes, anchor_config.strides))


@lru_cache(maxsize=16)
def _pyramid(
    shape_hw: tuple[int, int], pyramid_levels: tuple[int, ...], anchor_config: AnchorConfig
) -> tuple[np.ndarray, tuple]:
    """Cached anchors (read-only) and per-level layout ``(offset, h, w, stride, base)``."""
    params = _level_params(pyramid_levels, anchor_config)
    shapes = guess_shapes(shape_hw, tuple(p[0] for p in params))
    parts, layout, offset = [], [], 0
    for (_, size, stride), fshape in zip(params, shapes):
        base = generate_anchors(size, anchor_config.ratios, anchor_config.scales)
        parts.append(shift(fshape, stride, base))
        layout.append((offset, fshape[0], fshape[1], float(stride), base))
        offset += parts[-1].shape[0]
    anchors = np.concatenate(parts, axis=0) if parts else np.zeros((0, 4))
    anchors.setflags(write=False)
    return anchors, tuple(layout)


def anchors_for_shape(
    image_shape: tuple[int, ...],
    pyramid_levels: tuple[int, ...] = DEFAULT_PYRAMID_LEVELS,
    anchor_config: AnchorConfig | None = None,
) -> np.ndarray:
    """All anchors for a (padded) input shape, level by level (P3 first).

    Args:
        image_shape: ``(H, W)`` or ``(H, W, C)``.
        pyramid_levels: levels l; the i-th gets ``anchor_config.sizes[i]`` / ``strides[i]``.
        anchor_config: None means ``AnchorConfig()`` (the one source of the §5.3 constants).

    Returns:
        ``(N, 4)`` float64 anchors (a fresh, writable array); e.g. 160,956 for 800x1066.
    """
    cfg = AnchorConfig() if anchor_config is None else anchor_config
    shape_hw = (int(image_shape[0]), int(image_shape[1]))
    anchors, _ = _pyramid(shape_hw, tuple(int(lvl) for lvl in pyramid_levels), cfg)
    return anchors.copy()


# --------------------------------------------------------------------------------------------
# Box coding (§6.2, KEEP)
# --------------------------------------------------------------------------------------------


def bbox_transform(
    anchors: np.ndarray,
    gt_boxes: np.ndarray,
    mean: float | np.ndarray = 0.0,
    std: float | np.ndarray = 0.2,
) -> np.ndarray:
    """Corner-offset regression targets: ``((g - a) / (aw, ah, aw, ah) - mean) / std``.

    Args:
        anchors: ``(N, 4)`` anchors ``(x1, y1, x2, y2)``.
        gt_boxes: ``(N, 4)`` matched boxes.
        mean: subtracted before scaling (0, as the original).
        std: divisor, scalar or ``(4,)`` (0.2, as fizyr/keras-retinanet and the original).

    Returns:
        ``(N, 4)`` float64 ``(d_x1, d_y1, d_x2, d_y2)``.
    """
    a = np.asarray(anchors, dtype=np.float64).reshape(-1, 4)
    g = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    aw = a[:, 2] - a[:, 0]
    ah = a[:, 3] - a[:, 1]
    scale = np.stack([aw, ah, aw, ah], axis=1)
    return ((g - a) / scale - np.asarray(mean, dtype=np.float64)) / np.asarray(std, np.float64)


def bbox_transform_inv(
    anchors: np.ndarray,
    deltas: np.ndarray,
    mean: float | np.ndarray = 0.0,
    std: float | np.ndarray = 0.2,
) -> np.ndarray:
    """Decode corner offsets (the inverse of :func:`bbox_transform`; the graph's RegressBoxes).

    ``box = a + (delta * std + mean) * (aw, ah, aw, ah)``.

    Args:
        anchors: ``(..., 4)`` anchors ``(x1, y1, x2, y2)``.
        deltas: ``(..., 4)`` predicted offsets, broadcastable against ``anchors``.
        mean: as in :func:`bbox_transform`.
        std: as in :func:`bbox_transform`.

    Returns:
        ``(..., 4)`` float64 boxes ``(x1, y1, x2, y2)``.
    """
    a = np.asarray(anchors, dtype=np.float64)
    d = np.asarray(deltas, dtype=np.float64)
    aw = a[..., 2] - a[..., 0]
    ah = a[..., 3] - a[..., 1]
    scale = np.stack([aw, ah, aw, ah], axis=-1)
    real = d * np.asarray(std, dtype=np.float64) + np.asarray(mean, dtype=np.float64)
    return a + real * scale


# --------------------------------------------------------------------------------------------
# Assignment (§6.1, KEEP)
# --------------------------------------------------------------------------------------------


def _check_annotations(annotations: dict, num_classes: int, index: int) -> tuple:
    """Validate one image's annotations; return ``(bboxes float64 (M, 4), labels int64 (M,))``."""
    try:
        boxes = np.asarray(annotations["bboxes"], dtype=np.float64)
        labels = np.asarray(annotations["labels"]).astype(np.int64, copy=False).reshape(-1)
    except (KeyError, TypeError) as err:
        raise ValueError(
            f"annotations of image {index} must be a dict with 'bboxes' and 'labels': {err}"
        ) from err
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"annotations of image {index}: bboxes must be (M, 4), got {boxes.shape}")
    if labels.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"annotations of image {index}: {boxes.shape[0]} boxes but {labels.shape[0]} labels"
        )
    if not np.all(np.isfinite(boxes)):
        raise ValueError(f"annotations of image {index}: non-finite box coordinates")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"annotations of image {index}: labels must lie in [0, {num_classes}), got "
            f"{labels.min()}..{labels.max()}"
        )
    return boxes, labels


def _candidate_pairs(layout: tuple, gt: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    """(anchor index, GT index) of every pair that can reach IoU >= t, for a grid layout.

    IoU >= t  <=>  I >= t / (1 + t) * (area_a + area_g) =: c, and I <= iw * min(ha, hg), so the
    x-overlap must reach ``iw_min = c / min(ha, hg)``: ``cx + bx2 >= gx1 + iw_min`` and
    ``cx + bx1 <= gx2 - iw_min`` (likewise in y). Bounds get slack; the exact IoU decides later.
    """
    gw = np.maximum(gt[:, 2] - gt[:, 0], 0.0)
    gh = np.maximum(gt[:, 3] - gt[:, 1], 0.0)
    garea = gw * gh
    keep_g = garea > 0.0  # a zero-area GT has IoU 0 with every anchor
    frac = t / (1.0 + t) * (1.0 - _REL_SLACK)
    idx_parts, g_parts = [], []
    g_idx = np.nonzero(keep_g)[0]
    if g_idx.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    gx1, gy1, gx2, gy2 = (gt[g_idx, k][None, :] for k in range(4))  # (1, G)
    gwk, ghk, gak = gw[g_idx][None, :], gh[g_idx][None, :], garea[g_idx][None, :]
    for offset, fh, fw, stride, base in layout:
        if fh == 0 or fw == 0:
            continue
        num_a = base.shape[0]
        bx1, by1, bx2, by2 = (base[:, k][:, None] for k in range(4))  # (A, 1)
        bw, bh = bx2 - bx1, by2 - by1
        c = frac * (bw * bh + gak)  # (A, G)
        iw_min = c / np.minimum(bh, ghk)
        ih_min = c / np.minimum(bw, gwk)
        feasible = (iw_min <= np.minimum(bw, gwk) * (1 + _REL_SLACK) + _ABS_SLACK) & (
            ih_min <= np.minimum(bh, ghk) * (1 + _REL_SLACK) + _ABS_SLACK
        )
        cx_lo = gx1 + iw_min - bx2 - _ABS_SLACK
        cx_hi = gx2 - iw_min - bx1 + _ABS_SLACK
        cy_lo = gy1 + ih_min - by2 - _ABS_SLACK
        cy_hi = gy2 - ih_min - by1 + _ABS_SLACK
        # centre = (i + 0.5) * stride  =>  i in [ceil(lo / s - 0.5), floor(hi / s - 0.5)]
        x0 = np.maximum(np.ceil(cx_lo / stride - 0.5 - _REL_SLACK), 0).astype(np.int64)
        x1 = np.minimum(np.floor(cx_hi / stride - 0.5 + _REL_SLACK), fw - 1).astype(np.int64)
        y0 = np.maximum(np.ceil(cy_lo / stride - 0.5 - _REL_SLACK), 0).astype(np.int64)
        y1 = np.minimum(np.floor(cy_hi / stride - 0.5 + _REL_SLACK), fh - 1).astype(np.int64)
        nx = np.where(feasible, np.maximum(x1 - x0 + 1, 0), 0)
        ny = np.where(feasible, np.maximum(y1 - y0 + 1, 0), 0)
        count = (nx * ny).ravel()  # blocks in (A, G) order
        nz = np.nonzero(count)[0]
        if nz.size == 0:
            continue
        count = count[nz]
        a_of = nz // g_idx.size
        g_of = g_idx[nz % g_idx.size]
        bnx, bx0, by0 = nx.ravel()[nz], x0.ravel()[nz], y0.ravel()[nz]
        block = np.repeat(np.arange(nz.size), count)
        local = np.arange(block.size) - np.repeat(np.cumsum(count) - count, count)
        iy = by0[block] + local // bnx[block]
        ix = bx0[block] + local % bnx[block]
        idx_parts.append(offset + (iy * fw + ix) * num_a + a_of[block])
        g_parts.append(g_of[block])
    if not idx_parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(idx_parts), np.concatenate(g_parts)


def _reduce_pairs(
    num_anchors: int, idx: np.ndarray, g: np.ndarray, iou: np.ndarray, t: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per anchor with some IoU >= t: (anchor index, max IoU, lowest GT index attaining it)."""
    sel = iou >= t
    idx, g, iou = idx[sel], g[sel], iou[sel]
    if idx.size == 0:
        return idx, iou, g
    best = np.full(num_anchors, -1.0)  # dense scratch: cheaper than np.unique on the pairs
    np.maximum.at(best, idx, iou)
    at_max = iou == best[idx]
    first = np.full(num_anchors, np.iinfo(np.int64).max)
    np.minimum.at(first, idx[at_max], g[at_max])
    hit = np.flatnonzero(best >= t)
    return hit, best[hit], first[hit]


def _assign_exact(anchors: np.ndarray, gt: np.ndarray, t: float) -> tuple:
    """Exact fallback for arbitrary anchors: chunked IoU, GT culled per chunk by bounding box."""
    hit, best, first = [], [], []
    for start in range(0, anchors.shape[0], _CHUNK):
        block = anchors[start : start + _CHUNK]
        lo = block[:, :2].min(axis=0)
        hi = block[:, 2:].max(axis=0)
        touching = (gt[:, 0] < hi[0]) & (gt[:, 2] > lo[0]) & (gt[:, 1] < hi[1]) & (gt[:, 3] > lo[1])
        near = np.nonzero(touching | (t <= 0.0))[0]  # with t <= 0 even IoU 0 counts
        if near.size == 0:
            continue
        ov = compute_overlap(block, gt[near])
        arg = np.argmax(ov, axis=1)  # first maximum = lowest GT index (near is ascending)
        mx = ov[np.arange(ov.shape[0]), arg]
        rows = np.nonzero(mx >= t)[0]
        hit.append(start + rows)
        best.append(mx[rows])
        first.append(near[arg[rows]])
    if not hit:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64)
    return np.concatenate(hit), np.concatenate(best), np.concatenate(first)


def _match(anchors: np.ndarray, layout: tuple | None, gt: np.ndarray, t: float) -> tuple:
    """Anchors with max IoU >= t: (indices ascending, max IoU, matched GT index)."""
    if gt.shape[0] == 0:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64)
    if layout is None or t <= 0.0:
        return _assign_exact(anchors, gt, t)
    idx, g = _candidate_pairs(layout, gt, t)
    iou = paired_overlap(anchors[idx], gt[g])
    return _reduce_pairs(anchors.shape[0], idx, g, iou, t)


def _batch_layout(
    anchors: np.ndarray, image_group: list, anchor_config: AnchorConfig | None
) -> tuple | None:
    """Grid layout if ``anchors`` is the default pyramid of the batch's max shape, else None."""
    if not image_group:
        return None
    shape_hw = (
        max(int(np.shape(img)[0]) for img in image_group),
        max(int(np.shape(img)[1]) for img in image_group),
    )
    cfg = AnchorConfig() if anchor_config is None else anchor_config
    try:
        expected, layout = _pyramid(shape_hw, DEFAULT_PYRAMID_LEVELS, cfg)
    except ValueError:
        return None
    if expected.shape == anchors.shape and np.array_equal(expected, anchors):
        return layout
    return None


def _assign_batch(
    anchors: np.ndarray,
    image_group: list,
    annotations_group: list,
    num_classes: int,
    target_config: TargetConfig | None,
    anchor_config: AnchorConfig | None,
):
    """Yield per image: (state int8 (N,), matched anchor idx (K,), gt boxes (K, 4), labels (K,))."""
    tcfg = TargetConfig() if target_config is None else target_config
    a = np.asarray(anchors, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 4:
        raise ValueError(f"anchors must have shape (N, 4), got {a.shape}")
    if len(image_group) != len(annotations_group):
        raise ValueError(
            f"{len(image_group)} images but {len(annotations_group)} annotation dicts in the group"
        )
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    layout = _batch_layout(a, image_group, anchor_config)
    cx = 0.5 * (a[:, 0] + a[:, 2])
    cy = 0.5 * (a[:, 1] + a[:, 3])
    for i, (image, image_annotations) in enumerate(zip(image_group, annotations_group)):
        gt, gt_labels = _check_annotations(image_annotations, num_classes, i)
        hit, best, first = _match(a, layout, gt, tcfg.negative_overlap)
        state = np.zeros(a.shape[0], dtype=np.int8)
        state[hit] = np.where(best >= tcfg.positive_overlap, 1, -1)
        height, width = int(np.shape(image)[0]), int(np.shape(image)[1])
        state[(cx >= width) | (cy >= height)] = -1  # centre outside the real image (§6.1)
        yield state, hit, gt[first], gt_labels[first]


def anchor_targets_bbox(
    anchors: np.ndarray,
    image_group: list,
    annotations_group: list,
    num_classes: int,
    target_config: TargetConfig | None = None,
    *,
    anchor_config: AnchorConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Stage-1 targets (§6.1-6.2); packing as in the module docstring.

    Args:
        anchors: ``(N, 4)`` anchors of the padded batch shape (:func:`anchors_for_shape`).
        image_group: the B resized, un-padded images (only ``.shape[:2]`` is read).
        annotations_group: B dicts ``{"bboxes": (M, 4), "labels": (M,)}``, M may be 0.
        num_classes: C.
        target_config: thresholds and coding constants; None means ``TargetConfig()``.
        anchor_config: the config the anchors were built with (enables the fast path when they
            are not the default pyramid's); None means ``AnchorConfig()``.

    Returns:
        ``regression (B, N, 5)`` float32 and ``labels (B, N, C)`` float32.

    Raises:
        ValueError: on malformed anchors or annotations, or a label outside ``[0, C)``.
    """
    tcfg = TargetConfig() if target_config is None else target_config
    a = np.asarray(anchors, dtype=np.float64)
    batch = len(image_group)
    regression = np.zeros((batch, a.shape[0], 5), dtype=np.float32)
    labels = np.zeros((batch, a.shape[0], num_classes), dtype=np.float32)
    assigned = _assign_batch(a, image_group, annotations_group, num_classes, tcfg, anchor_config)
    for i, (state, hit, gt, gt_labels) in enumerate(assigned):
        if hit.size:
            regression[i, hit, :4] = bbox_transform(a[hit], gt, tcfg.bbox_mean, tcfg.bbox_std)
        regression[i, :, 4] = state
        labels[i, state == -1, :] = -1
        positive = state[hit] == 1
        labels[i, hit[positive], gt_labels[positive]] = 1
    return regression, labels


def iou_targets(
    anchors, image_group, annotations_group, num_classes, target_config=None, *, anchor_config=None
) -> np.ndarray:
    """Stage-2 targets (§6.3): absolute matched GT box + state, ``(B, N, 5)`` float32.

    Same assignment as :func:`anchor_targets_bbox`; the box is not encoded (the original's
    ``bbox_transform_iou`` was the identity). Arguments as in :func:`anchor_targets_bbox`.
    """
    a = np.asarray(anchors, dtype=np.float64)
    out = np.zeros((len(image_group), a.shape[0], 5), dtype=np.float32)
    assigned = _assign_batch(
        a, image_group, annotations_group, num_classes, target_config, anchor_config
    )
    for i, (state, hit, gt, _) in enumerate(assigned):
        out[i, hit, :4] = gt
        out[i, :, 4] = state
    return out


def stage1_targets(anchors, image_group, annotations_group, num_classes, **configs):
    """Generator ``targets_fn`` for stage 1: ``{REGRESSION: (B,N,5), CLASSIFICATION: (B,N,C)}``.

    Arguments as :func:`anchor_targets_bbox` (``configs``: ``target_config``, ``anchor_config``).
    """
    regression, labels = anchor_targets_bbox(
        anchors, image_group, annotations_group, num_classes, **configs
    )
    return {config.REGRESSION: regression, config.CLASSIFICATION: labels}


def stage2_targets(anchors, image_group, annotations_group, num_classes, **configs):
    """Generator ``targets_fn`` for stage 2: ``{IOU_REGRESSION_OUTPUT: (B, N, 5)}``.

    Arguments as :func:`iou_targets` (``configs``: ``target_config``, ``anchor_config``).
    """
    boxes = iou_targets(anchors, image_group, annotations_group, num_classes, **configs)
    return {config.IOU_REGRESSION_OUTPUT: boxes}
