"""Synthetic packed-shelf scenes in the SKU-110K layout (for the demo, tests and CPU-only users).

Goldman et al. (CVPR 2019) study *densely packed scenes*: retail shelves where many similar-looking
products stand side by side, touching, with only subtle boundaries between them. The real SKU-110K
images cannot be shipped with the code, so this module draws small stand-ins that keep what makes
the task hard:

- **Layout** (:func:`make_layout`): shelves are horizontal bands; on each shelf products stand on
  one baseline, side by side and touching (gap 0), in runs of identical facings of one "brand", with
  varied widths and heights between brands and occasional empty gaps.
- **Appearance** (:func:`render_scene`): each shelf has a few look-alike brands that share a colour
  scheme and a label design (bands, stripes, panels, logos, "text"), so neighbours are hard to tell
  apart; bottles, cans and boxes are shaded; shelves have boards, price tags and dark cavities; the
  photo gets global lighting (gradient, vignette, colour cast), sensor noise and a slight blur.
- **Dataset** (:func:`write_dataset`): ``images/{split}_{i}.jpg`` plus header-less 8-column
  ``annotations/annotations_{split}.csv`` rows ``img,x1,y1,x2,y2,object,W,H`` (§8.1) and
  ``class_mappings.csv`` (``object,0``, §8.2).

Boxes are integer pixels ``(x1, y1, x2, y2)`` with the product covering columns ``x1 .. x2 - 1``
and rows ``y1 .. y2 - 1``, so touching neighbours share a coordinate (``prev.x2 == next.x1``) and
have IoU 0. Every box satisfies ``0 <= x1 < x2 < W`` and ``0 <= y1 < y2 < H`` (strictly inside, so
the SKU-110K reader's clamping of §8.1 never changes them).

Everything is deterministic given the seed: each image is drawn from its own
``SeedSequence([seed, crc32(split), index])``, so growing the train split never changes the test
images. NumPy and OpenCV only (no Keras), as for every ``utils`` module.
"""

from __future__ import annotations

import math
import os
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import cv2
import numpy as np

#: Product size range (square root of the box area, pixels) at the reference image size below. The
#: RetinaNet used here has its smallest anchor at 32 px on stride 8 (config.AnchorConfig), so
#: 28-64 px products at 320x320 are all matchable by the P3/P4 anchors.
REFERENCE_OBJECT_SIZE = (28.0, 64.0)
#: Image side (geometric mean of height and width) at which REFERENCE_OBJECT_SIZE applies.
REFERENCE_IMAGE_SIDE = 320.0
#: Products grow with the image side to this power (< 1), so bigger images hold *more* products, as
#: in SKU-110K: 320x320 -> ~35 products, a 3264x2448 photograph -> ~145 (SKU-110K's mean is ~147).
OBJECT_SIZE_EXPONENT = 0.68
#: Product aspect ratio (width / height) range: tall bottles (0.4) to wide boxes (1.4).
DEFAULT_ASPECT_RANGE = (0.4, 1.4)
#: Probability of an empty slot before a product (a sold-out facing showing the shelf back).
DEFAULT_GAP_PROB = 0.05
#: Default image size and JPEG quality of :func:`write_dataset`.
DEFAULT_HEIGHT = 320
DEFAULT_WIDTH = 320
DEFAULT_JPEG_QUALITY = 90
#: Default split sizes of :func:`write_dataset`.
DEFAULT_COUNTS = {"train": 100, "val": 10, "test": 20}
#: The only class of SKU-110K (§8.2).
CLASS_NAME = "object"

_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


# --------------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------------


@dataclass
class Shelf:
    """One shelf of a layout.

    Attributes:
        top: first row of the shelf's cavity (the underside of the board above).
        baseline: the row the products stand on; ``y2`` of every product on this shelf.
        board_bottom: first row below this shelf's board (its rows: ``baseline .. board_bottom-1``).
        indices: indices into the layout's boxes of the products on this shelf, left to right.
    """

    top: int
    baseline: int
    board_bottom: int
    indices: list[int] = field(default_factory=list)


@dataclass
class Layout:
    """A planned scene: boxes ``(N, 4)`` int64 plus the shelves they stand on."""

    height: int
    width: int
    boxes: np.ndarray
    shelves: list[Shelf]
    board_thickness: int


def default_object_sizes(height: int, width: int) -> tuple[float, float]:
    """The default product size range (square root of box area, pixels) for an image size.

    ``REFERENCE_OBJECT_SIZE * (sqrt(height * width) / 320) ** OBJECT_SIZE_EXPONENT`` (0.68):
    28-64 px at 320x320, about 24-55 px at 256x256 and 123-282 px at 3264x2448.

    Args:
        height: image height in pixels.
        width: image width in pixels.

    Returns:
        ``(min_size, max_size)`` in pixels.
    """
    factor = (math.sqrt(height * width) / REFERENCE_IMAGE_SIDE) ** OBJECT_SIZE_EXPONENT
    return REFERENCE_OBJECT_SIZE[0] * factor, REFERENCE_OBJECT_SIZE[1] * factor


def _as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def _check_image_size(height: int, width: int) -> tuple[int, int]:
    if int(height) != height or int(width) != width or height < 16 or width < 16:
        raise ValueError(f"image size must be integers >= 16, got height={height}, width={width}")
    return int(height), int(width)


def _resolve_sizes(
    height: int, width: int, min_object_size: float | None, max_object_size: float | None
) -> tuple[float, float]:
    default_min, default_max = default_object_sizes(height, width)
    lo = default_min if min_object_size is None else float(min_object_size)
    hi = default_max if max_object_size is None else float(max_object_size)
    if not (lo >= 2 and hi >= lo):
        raise ValueError(
            f"object sizes must satisfy 2 <= min_object_size <= max_object_size, got {lo} and {hi}"
        )
    if lo > min(height, width) / 2:
        raise ValueError(
            f"min_object_size {lo} is too large for a {height}x{width} image "
            f"(at most half the shorter side, {min(height, width) / 2})"
        )
    return lo, hi


def _sample_product(
    rng: np.random.Generator,
    centre: float,
    lo: float,
    hi: float,
    aspect_range: tuple[float, float],
    max_height: int,
    max_width: int,
) -> tuple[int, int] | None:
    """Draw one brand's (width, height) with sqrt(w*h) in [lo, hi] and h <= max_height, or None."""
    log_lo, log_hi = math.log(aspect_range[0]), math.log(aspect_range[1])
    for _ in range(30):
        # Brands on one shelf cluster around the shelf's size (sigma 0.18 in log space).
        size = float(np.clip(centre * math.exp(rng.normal(0.0, 0.18)), lo, hi))
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(size * math.sqrt(aspect)))
        h = int(round(size / math.sqrt(aspect)))
        if w < 1 or h < 1 or h > max_height or w > max_width:
            continue
        if lo <= math.sqrt(w * h) <= hi:
            return w, h
    return None


def plan_layout(
    rng: np.random.Generator | int | None,
    height: int,
    width: int,
    min_object_size: float | None = None,
    max_object_size: float | None = None,
    gap_prob: float = DEFAULT_GAP_PROB,
    aspect_range: tuple[float, float] = DEFAULT_ASPECT_RANGE,
) -> Layout:
    """Plan a packed-shelf scene: shelves of touching products on a shared baseline.

    Shelves are horizontal bands from the top of the image down. Each shelf draws 2-5 brands whose
    sizes cluster around a shelf size; products are placed left to right in runs of 1-6 identical
    facings with no gap between them, and with probability ``gap_prob`` an empty slot is left
    before a product. All products of a shelf share ``y2`` (the baseline).

    Args:
        rng: a ``numpy.random.Generator`` (or a seed for one).
        height: image height in pixels (>= 16).
        width: image width in pixels (>= 16).
        min_object_size: smallest product ``sqrt(w * h)`` in pixels; default from
            :func:`default_object_sizes` (28 px at 320x320).
        max_object_size: largest product ``sqrt(w * h)``; default 64 px at 320x320.
        gap_prob: probability of an empty slot before each product.
        aspect_range: ``(low, high)`` product width / height.

    Returns:
        a :class:`Layout`: the shelves, and ``boxes``, ``(N, 4)`` int64 ``(x1, y1, x2, y2)``,
        shelf by shelf, left to right, with ``0 <= x1 < x2 < width``, ``0 <= y1 < y2 < height``
        and pairwise IoU 0.

    Raises:
        ValueError: on a bad image size, size range, gap probability or aspect range.
    """
    rng = _as_rng(rng)
    height, width = _check_image_size(height, width)
    lo, hi = _resolve_sizes(height, width, min_object_size, max_object_size)
    if not 0.0 <= gap_prob < 1.0:
        raise ValueError(f"gap_prob must be in [0, 1), got {gap_prob}")
    if not 0 < aspect_range[0] <= aspect_range[1]:
        raise ValueError(
            f"aspect_range must be (low, high) with 0 < low <= high, got {aspect_range}"
        )

    # Board thickness follows the product scale: ~15 % of the mean product size, at least 3 px.
    board = max(3, int(round(0.15 * math.sqrt(lo * hi))))
    # Shortest product that can exist: size lo at the widest aspect.
    min_product_h = max(1, int(math.ceil(lo / math.sqrt(aspect_range[1]))))

    boxes: list[tuple[int, int, int, int]] = []
    shelves: list[Shelf] = []
    # Start below a partly visible board of the shelf above (or right at the top edge).
    y = int(rng.integers(0, board + 1)) if rng.random() < 0.7 else 0
    while True:
        headroom = int(round(rng.uniform(0.03, 0.15) * hi)) + 1
        # Products must end strictly above the bottom edge: y2 <= height - 1.
        available = height - 1 - (y + headroom)
        if available < min_product_h:
            break
        centre = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        n_brands = int(rng.integers(2, 6))
        brands = []
        for _ in range(n_brands):
            wh = _sample_product(rng, centre, lo, hi, aspect_range, available, width - 1)
            if wh is not None:
                brands.append(wh)
        if not brands:
            break
        shelf_h = max(h for _, h in brands)
        baseline = y + headroom + shelf_h
        shelf = Shelf(top=y, baseline=baseline, board_bottom=min(height, baseline + board))

        # Fill the shelf left to right with runs of identical facings, touching each other.
        x = int(rng.integers(0, int(0.3 * lo) + 1)) if rng.random() < 0.5 else 0
        brand = int(rng.integers(len(brands)))
        while True:
            run = int(rng.integers(1, 7))
            placed_any = False
            for _ in range(run):
                w, h = brands[brand]
                if gap_prob > 0 and rng.random() < gap_prob:
                    x += int(rng.integers(max(2, w // 3), w + 2))
                if x + w > width - 1:  # x2 <= width - 1
                    break
                shelf.indices.append(len(boxes))
                boxes.append((x, baseline - h, x + w, baseline))
                x += w
                placed_any = True
            fitting = [i for i, (w, _) in enumerate(brands) if x + w <= width - 1]
            if not fitting:
                break
            if placed_any and len(fitting) > 1:
                # Next run: another brand (neighbouring runs differ, like a real planogram).
                fitting = [i for i in fitting if i != brand] or fitting
            brand = fitting[int(rng.integers(len(fitting)))]
        if shelf.indices:
            shelves.append(shelf)
        y = shelf.board_bottom
        if y >= height - 1:
            break

    array = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    return Layout(height=height, width=width, boxes=array, shelves=shelves, board_thickness=board)


def make_layout(rng: np.random.Generator | int | None, height: int, width: int, **options):
    """The ``(N, 4)`` boxes of :func:`plan_layout` (same arguments), without the shelves."""
    return plan_layout(rng, height, width, **options).boxes


def _layout_from_boxes(height: int, width: int, boxes: np.ndarray) -> Layout:
    """Rebuild shelves from arbitrary boxes: products sharing a baseline (``y2``) form a shelf."""
    shelves: list[Shelf] = []
    if len(boxes):
        sizes = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        board = max(3, int(round(0.15 * float(np.median(sizes)))))
    else:
        board = 3
    for baseline in np.unique(boxes[:, 3]):
        idx = np.flatnonzero(boxes[:, 3] == baseline)
        idx = idx[np.argsort(boxes[idx, 0], kind="stable")]
        top = max(0, int(boxes[idx, 1].min()) - 2)
        shelves.append(
            Shelf(top, int(baseline), min(height, int(baseline) + board), [int(i) for i in idx])
        )
    return Layout(height=height, width=width, boxes=boxes, shelves=shelves, board_thickness=board)


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


def _hsv_bgr(h: float, s: float, v: float) -> np.ndarray:
    """BGR float32 (3,) in 0..255 from hue in degrees, saturation and value in 0..1."""
    # OpenCV's float32 HSV path takes H in 0..360 and S, V in 0..1, and returns BGR in 0..1.
    hsv = np.array([[[h % 360.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)]]], np.float32)
    bgr = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    return (bgr.reshape(3) * 255.0).astype(np.float32)


@dataclass
class _Design:
    """A shelf's product line: brands on one shelf are variants of it, so neighbours look alike."""

    hue: float
    sat: float
    val: float
    label_kind: str  # "band", "panel", "stripes", "split"
    label_light: bool
    cap_hue: float
    text_rows: int


def _shelf_design(rng: np.random.Generator) -> _Design:
    return _Design(
        hue=float(rng.uniform(0, 360)),
        sat=float(rng.uniform(0.25, 0.9)),
        val=float(rng.uniform(0.35, 0.95)),
        label_kind=str(rng.choice(["band", "panel", "stripes", "split"])),
        label_light=bool(rng.random() < 0.6),
        cap_hue=float(rng.uniform(0, 360)),
        text_rows=int(rng.integers(1, 4)),
    )


def _shape_for(rng: np.random.Generator, w: int, h: int) -> str:
    aspect = w / h
    if aspect < 0.62:
        return "bottle" if rng.random() < 0.65 else "can"
    if aspect < 0.95:
        return str(rng.choice(["can", "box", "jar"]))
    return "box" if rng.random() < 0.8 else "jar"


def _render_product(
    rng: np.random.Generator, w: int, h: int, design: _Design, variant: bool
) -> tuple[np.ndarray, np.ndarray]:
    """One brand's template: BGR float32 ``(h, w, 3)`` and alpha float32 ``(h, w)`` in 0..1."""
    shape = _shape_for(rng, w, h)
    hue = design.hue + (rng.uniform(-25, 25) if variant else rng.uniform(-6, 6))
    body = _hsv_bgr(hue, design.sat, design.val * rng.uniform(0.9, 1.1))
    if design.label_light:
        label = _hsv_bgr(hue + rng.uniform(-20, 20), rng.uniform(0.0, 0.25), rng.uniform(0.85, 1.0))
        ink = _hsv_bgr(hue, 0.8, 0.25)
    else:
        label = _hsv_bgr(hue + 180 + rng.uniform(-40, 40), 0.8, rng.uniform(0.5, 0.9))
        ink = _hsv_bgr(0, 0, rng.uniform(0.9, 1.0))
    accent = _hsv_bgr(design.cap_hue + (rng.uniform(-60, 60) if variant else 0), 0.85, 0.8)

    img = np.empty((h, w, 3), np.float32)
    img[:] = body
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    half = w / 2.0
    xn = (xs + 0.5 - half) / half  # -1 .. 1 across the product

    # Silhouette: half-width as a fraction of w/2 per row.
    profile = np.ones((h, 1), np.float32)
    body_top = 0
    if shape == "bottle":
        neck = rng.uniform(0.28, 0.45)
        neck_end = rng.uniform(0.18, 0.3) * h
        shoulder_end = neck_end + rng.uniform(0.1, 0.2) * h
        t = np.clip((ys - neck_end) / max(1.0, shoulder_end - neck_end), 0, 1)
        profile = neck + (1 - neck) * (0.5 - 0.5 * np.cos(np.pi * t))
        cap_rows = max(2, int(0.08 * h))
        img[:cap_rows] = accent
        body_top = int(shoulder_end)
    elif shape in ("can", "jar"):
        r = max(1.0, (0.06 if shape == "can" else 0.12) * h)
        # Rounded top corners: the half-width grows from 85 % to 100 % over the first r rows.
        t = np.clip(ys / r, 0, 1)
        profile = np.where(ys < r, 0.85 + 0.15 * np.sqrt(1 - (1 - t) ** 2), 1.0)
        lid_rows = max(2, int((0.06 if shape == "can" else 0.14) * h))
        img[:lid_rows] = accent if shape == "jar" else body * 0.6 + 90
        body_top = lid_rows
    alpha = np.clip(profile * half - np.abs(xs + 0.5 - half) + 0.5, 0, 1).astype(np.float32)

    # Label / decoration in the body area.
    top = body_top + 1
    span = max(3, h - top)
    kind = design.label_kind
    if kind in ("band", "panel"):
        y0 = top + int(rng.uniform(0.15, 0.3) * span)
        y1 = min(h - 2, y0 + max(3, int(rng.uniform(0.3, 0.5) * span)))
        x0 = 0 if kind == "band" else max(1, int(0.12 * w))
        x1 = w if kind == "band" else w - max(1, int(0.12 * w))
        img[y0:y1, x0:x1] = label
        if rng.random() < 0.6 and y1 - y0 > 6 and w > 8:
            # Logo: an ellipse in the accent colour.
            cx, cy = int(w * rng.uniform(0.35, 0.65)), int((y0 + y1) * 0.5)
            ax, ay = max(2, int(w * 0.22)), max(2, int((y1 - y0) * 0.28))
            cv2.ellipse(img, (cx, cy - ay // 2), (ax, ay), 0, 0, 360, accent.tolist(), -1)
        _text(rng, img, y0 + (y1 - y0) * 2 // 3, y1 - 1, x0 + 2, x1 - 2, ink, design.text_rows)
    elif kind == "stripes":
        n = int(rng.integers(2, 5))
        thick = max(1, int(span / (3 * n)))
        for k in range(n):
            yy = top + int((k + 1) * span / (n + 1))
            img[yy : yy + thick] = accent if k % 2 == 0 else label
        y0 = top + int(0.55 * span)
        _text(rng, img, y0, min(h - 2, y0 + int(0.25 * span)), 2, w - 2, ink, design.text_rows)
    else:  # "split": diagonal two-colour body with text
        pts = np.array(
            [[0, top + int(0.6 * span)], [w, top + int(0.3 * span)], [w, h], [0, h]], np.int32
        )
        cv2.fillConvexPoly(img, pts, label.tolist())
        y0 = top + int(0.15 * span)
        _text(rng, img, y0, y0 + max(3, int(0.2 * span)), 2, w - 2, ink, design.text_rows)

    # Shading: cylinders get a cosine falloff and a specular stripe, boxes darker side edges and a
    # lit top face.
    if shape == "box":
        gain = 1.0 - 0.28 * np.abs(xn) ** 4
        gain = np.repeat(gain, h, axis=0)
        lid = max(1, int(0.05 * h))
        gain[:lid] *= 1.18
    else:
        spec = rng.uniform(-0.55, -0.25)
        gain = 0.62 + 0.38 * np.sqrt(np.clip(1 - xn**2, 0, 1))
        gain = gain + 0.45 * np.exp(-(((xn - spec) / 0.12) ** 2))
        gain = np.repeat(gain, h, axis=0)
    img *= gain[..., None]
    # Darker contour (1-2 px) so touching products have a faint but real boundary.
    edge = max(1, w // 40)
    img[:, :edge] *= 0.72
    img[:, w - edge :] *= 0.72
    img[: max(1, h // 60)] *= 0.8
    return img, alpha


def _text(
    rng: np.random.Generator,
    img: np.ndarray,
    y0: int,
    y1: int,
    x0: int,
    x1: int,
    ink: np.ndarray,
    rows: int,
) -> None:
    """Scribble ``rows`` lines of fake print (short dashes) into ``img[y0:y1, x0:x1]``."""
    if y1 - y0 < 2 or x1 - x0 < 4:
        return
    step = max(2, (y1 - y0) // max(1, rows))
    for yy in range(y0, y1, step)[:rows]:
        x = x0 + int(rng.integers(0, 3))
        thick = max(1, step // 3)
        while x < x1 - 2:
            length = int(rng.integers(2, max(3, (x1 - x0) // 3) + 1))
            img[yy : yy + thick, x : min(x1, x + length)] = ink
            x += length + int(rng.integers(1, 3))


def _linear(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    return a + (b - a) * t


def render_layout(rng: np.random.Generator | int | None, layout: Layout) -> np.ndarray:
    """Draw a planned :class:`Layout`; returns uint8 BGR ``(height, width, 3)``."""
    rng = _as_rng(rng)
    height, width, boxes = layout.height, layout.width, layout.boxes
    board = layout.board_thickness

    # Back wall of the shelving unit: a pale, slightly tinted panel with a vertical gradient.
    wall = _hsv_bgr(rng.uniform(0, 360), rng.uniform(0.0, 0.25), rng.uniform(0.55, 0.9))
    cavity_gain = rng.uniform(0.45, 0.7)
    img = np.empty((height, width, 3), np.float32)
    img[:] = wall
    ys = np.arange(height, dtype=np.float32)[:, None, None]

    board_colour = _hsv_bgr(rng.uniform(0, 360), rng.uniform(0.0, 0.2), rng.uniform(0.65, 0.95))
    tag_colour = _hsv_bgr(rng.uniform(40, 70), rng.uniform(0.0, 0.7), 0.97)

    def draw_board(y0: int, y1: int) -> None:
        y0, y1 = max(0, y0), min(height, y1)
        if y1 <= y0:
            return
        img[y0:y1] = board_colour
        img[y0] = board_colour * 1.15 + 10  # lit front edge
        img[y1 - 1] = board_colour * 0.45  # shadow line under the lip

    shelves = layout.shelves
    if shelves and shelves[0].top > 0:
        draw_board(shelves[0].top - board, shelves[0].top)
    for shelf in shelves:
        # The cavity is darker, and darkest right under the board above (its shadow).
        y0, y1 = shelf.top, shelf.baseline
        if y1 > y0:
            t = (ys[y0:y1] - y0) / max(1, y1 - y0)
            img[y0:y1] *= _linear(cavity_gain * 0.55, cavity_gain, np.sqrt(t))
        draw_board(shelf.baseline, shelf.board_bottom)
    last = shelves[-1].board_bottom if shelves else 0
    if last < height:  # floor / kick plate below the lowest shelf
        img[last:] = wall * 0.35

    # Products, shelf by shelf: one template per brand (same size on a shelf), copied per facing.
    for shelf in shelves:
        design = _shelf_design(rng)
        templates: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        prev_x2, prev_key = None, None
        for i in shelf.indices:
            x1, y1, x2, y2 = (int(v) for v in boxes[i])
            key = (x2 - x1, y2 - y1)
            if key not in templates:
                variant = len(templates) > 0 and rng.random() < 0.5
                templates[key] = _render_product(rng, key[0], key[1], design, variant)
            tpl, alpha = templates[key]
            gain = rng.uniform(0.88, 1.08) * (1 + rng.normal(0, 0.025, 3)).astype(np.float32)
            if rng.random() < 0.12:  # a facing turned slightly: mirrored label
                tpl, alpha = tpl[:, ::-1], alpha[:, ::-1]
            region = img[y1:y2, x1:x2]
            a = alpha[..., None]
            region += a * (tpl * gain - region)
            # Price tag on the board under the first facing of each run.
            if prev_x2 != x1 or prev_key != key:
                ty0, ty1 = y2 + max(1, board // 5), min(shelf.board_bottom - 1, y2 + board)
                tx1 = min(width, x1 + max(4, int(1.6 * board)))
                if ty1 > ty0 and tx1 > x1:
                    img[ty0:ty1, x1:tx1] = tag_colour
                    ym = (ty0 + ty1) // 2
                    img[ym : ym + 1, x1 + 1 : max(x1 + 2, tx1 - 2)] = tag_colour * 0.2
            prev_x2, prev_key = x2, key

    # Lighting: exposure, colour cast, linear gradient and vignette, computed on a coarse grid.
    gh, gw = 16, 16
    gy, gx = np.mgrid[0:gh, 0:gw].astype(np.float32)
    gy, gx = gy / (gh - 1) - 0.5, gx / (gw - 1) - 0.5
    light = rng.uniform(0.85, 1.15) * (
        1 + rng.uniform(-0.35, 0.35) * gx + rng.uniform(-0.35, 0.35) * gy
    )
    light *= 1 - rng.uniform(0.1, 0.45) * (gx**2 + gy**2) * 2
    if rng.random() < 0.5:  # a spotlight
        cx, cy, r = rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), rng.uniform(0.15, 0.4)
        light += rng.uniform(0.1, 0.3) * np.exp(-((gx - cx) ** 2 + (gy - cy) ** 2) / r**2)
    light = cv2.resize(light.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    cast = (1 + rng.uniform(-0.06, 0.06) * np.array([1.0, 0.0, -1.0])).astype(np.float32)
    img *= light[..., None]
    img *= cast

    # Camera: slight blur, then sensor noise.
    sigma = rng.uniform(0.5, 1.0)
    img = cv2.GaussianBlur(img, (0, 0), sigmaX=sigma)
    noise = rng.standard_normal((height, width, 3), dtype=np.float32)
    img += noise * np.float32(rng.uniform(2.0, 6.0))
    np.clip(img, 0, 255, out=img)
    return (img + 0.5).astype(np.uint8)


def _check_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    array = np.asarray(boxes)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {array.shape}")
    if not np.all(np.equal(np.mod(array, 1), 0)):
        raise ValueError("boxes must be integer pixel coordinates")
    array = array.astype(np.int64)
    bad = (
        (array[:, 0] < 0)
        | (array[:, 1] < 0)
        | (array[:, 2] >= width)
        | (array[:, 3] >= height)
        | (array[:, 2] <= array[:, 0])
        | (array[:, 3] <= array[:, 1])
    )
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"box {i} {array[i].tolist()} is empty or not strictly inside the "
            f"{height}x{width} image (need 0 <= x1 < x2 < width, 0 <= y1 < y2 < height)"
        )
    return array


def render_scene(
    rng: np.random.Generator | int | None,
    height: int,
    width: int,
    boxes: np.ndarray | None = None,
    min_object_size: float | None = None,
    max_object_size: float | None = None,
    gap_prob: float = DEFAULT_GAP_PROB,
) -> tuple[np.ndarray, np.ndarray]:
    """Render a packed-shelf photograph.

    Args:
        rng: a ``numpy.random.Generator`` (or a seed for one); the only source of randomness.
        height: image height in pixels.
        width: image width in pixels.
        boxes: ``(N, 4)`` integer boxes to draw products into; shelves are rebuilt from shared
            baselines (``y2``). Default: a fresh :func:`make_layout` with the size arguments.
        min_object_size: passed to :func:`make_layout` when ``boxes`` is None.
        max_object_size: passed to :func:`make_layout` when ``boxes`` is None.
        gap_prob: passed to :func:`make_layout` when ``boxes`` is None.

    Returns:
        ``(image, boxes)``: uint8 BGR ``(height, width, 3)`` and int64 ``(N, 4)`` boxes.

    Raises:
        ValueError: on a bad size, or boxes that are empty or not strictly inside the image.
    """
    rng = _as_rng(rng)
    height, width = _check_image_size(height, width)
    if boxes is None:
        layout = plan_layout(rng, height, width, min_object_size, max_object_size, gap_prob)
    else:
        layout = _layout_from_boxes(height, width, _check_boxes(boxes, height, width))
    return render_layout(rng, layout), layout.boxes


# --------------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------------


def image_seed(seed: int, split: str, index: int) -> np.random.SeedSequence:
    """The seed of image ``index`` of ``split``: independent of every other image and split."""
    return np.random.SeedSequence([int(seed), zlib.crc32(split.encode("utf-8")), int(index)])


def write_dataset(
    out_dir: str | os.PathLike,
    counts: Mapping[str, int] | None = None,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    seed: int = 0,
    min_object_size: float | None = None,
    max_object_size: float | None = None,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    gap_prob: float = DEFAULT_GAP_PROB,
    on_image: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Write a synthetic dataset in the SKU-110K layout.

    Files: ``out_dir/images/{split}_{i}.jpg``, ``out_dir/annotations/annotations_{split}.csv``
    (no header, one row ``{split}_{i}.jpg,x1,y1,x2,y2,object,W,H`` per box, §8.1; an
    image without boxes gets the image-only row ``name,,,,,,,``) and ``out_dir/class_mappings.csv``
    (``object,0``). Existing files of the same names are overwritten.

    Args:
        out_dir: dataset root (created if missing).
        counts: images per split, e.g. ``{"train": 100, "val": 10, "test": 20}`` (the default).
        height: image height in pixels.
        width: image width in pixels.
        seed: non-negative integer; the same seed gives byte-identical CSVs and identical pixels.
        min_object_size: see :func:`make_layout`.
        max_object_size: see :func:`make_layout`.
        jpeg_quality: OpenCV JPEG quality, 1-100.
        gap_prob: see :func:`make_layout`.
        on_image: optional callback ``(split, index, n_boxes)`` after each image (progress bars).

    Returns:
        ``{"out_dir": str, "class_mappings": path, "splits": {split: {"images": n, "boxes": m,
        "annotations": csv path, "images_dir": path}}}``.

    Raises:
        ValueError: on a bad split name or count, seed, JPEG quality or size argument.
        OSError: when a file cannot be written.
    """
    counts = dict(DEFAULT_COUNTS if counts is None else counts)
    for split, n in counts.items():
        if not isinstance(split, str) or not _SPLIT_NAME.match(split):
            raise ValueError(f"split names must be letters, digits, '_' or '-', got {split!r}")
        if int(n) != n or n < 0:
            raise ValueError(f"count of split {split!r} must be a non-negative integer, got {n!r}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not 1 <= int(jpeg_quality) <= 100:
        raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality!r}")
    height, width = _check_image_size(height, width)
    _resolve_sizes(height, width, min_object_size, max_object_size)  # fail before writing

    out_dir = os.path.abspath(os.fspath(out_dir))
    images_dir = os.path.join(out_dir, "images")
    ann_dir = os.path.join(out_dir, "annotations")
    os.makedirs(images_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    classes_path = os.path.join(out_dir, "class_mappings.csv")
    with open(classes_path, "w", encoding="utf-8", newline="") as f:
        f.write(f"{CLASS_NAME},0\n")

    params = [int(cv2.IMWRITE_JPEG_QUALITY), int(jpeg_quality)]
    summary: dict = {"out_dir": out_dir, "class_mappings": classes_path, "splits": {}}
    for split, n in counts.items():
        csv_path = os.path.join(ann_dir, f"annotations_{split}.csv")
        n_boxes = 0
        lines: list[str] = []
        for i in range(int(n)):
            rng = np.random.default_rng(image_seed(seed, split, i))
            image, boxes = render_scene(
                rng, height, width, None, min_object_size, max_object_size, gap_prob
            )
            name = f"{split}_{i}.jpg"
            path = os.path.join(images_dir, name)
            ok, encoded = cv2.imencode(".jpg", image, params)
            if not ok:
                raise OSError(f"OpenCV could not encode {path} as JPEG")
            with open(path, "wb") as f:
                f.write(encoded.tobytes())
            if len(boxes) == 0:
                lines.append(f"{name},,,,,,,\n")
            for x1, y1, x2, y2 in boxes.tolist():
                lines.append(f"{name},{x1},{y1},{x2},{y2},{CLASS_NAME},{width},{height}\n")
            n_boxes += len(boxes)
            if on_image is not None:
                on_image(split, i, len(boxes))
        with open(csv_path, "w", encoding="utf-8", newline="") as f:
            f.writelines(lines)
        summary["splits"][split] = {
            "images": int(n),
            "boxes": n_boxes,
            "annotations": csv_path,
            "images_dir": images_dir,
        }
    return summary
