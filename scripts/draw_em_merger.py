"""Draw the EM-Merger's steps on one image: panels (c)-(e) of the paper's system figure.

Goldman et al. (CVPR 2019), Fig. 3: (a) input image, (b) raw detections, (c) the EM-Merger's
Gaussian heat map, (d) its contours, the regions resolved one by one, (e) the resolved detections.
This script draws (c)-(e) side by side with the merger's own functions (postprocess/heat_map.py,
postprocess/em_merger.py; §10):

- (c) the heat map of the detections' Gaussians as the merger renders it
  (:func:`~..heat_map.render_heat_map` at the merger's sampling step);
- (d) the thresholded map (tinted), its external contours and each region's bounding rectangle
  with K, the number of objects the merger estimates in it (:func:`~..em_merger.find_regions`;
  dashed: regions too small to resolve);
- (e) the detections :func:`~..em_merger.merge_detections` keeps, on the image.

The raw detections come from a trained model (``--model`` and ``--image``, predict's steps up to
the merger) or, for a figure that needs no trained model (the default), are simulated on a
synthetic shelf: jittered copies of every ground-truth box, boxes straddling neighbours and
background noise, scored like a detector (``scripts/bench_merger.py``'s ``simulate_detections``).

Usage (from the repository root)::

    .venv/bin/python scripts/draw_em_merger.py                  # figures/em_merger_panels.png
    .venv/bin/python scripts/draw_em_merger.py --model iou_resnet50_csv_07.weights.h5 \\
        --image shelf.jpg --out panels.png
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

import cv2
import numpy as np

SCRIPTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(SCRIPTS_DIR)
for _path in (REPO_ROOT, SCRIPTS_DIR):  # run as a file without PYTHONPATH=.
    if _path not in sys.path:
        sys.path.insert(0, _path)

from bench_merger import simulate_detections  # noqa: E402

from object_detector_retinanet.keras_retinanet.config import EmMergerConfig  # noqa: E402
from object_detector_retinanet.keras_retinanet.postprocess.em_merger import (  # noqa: E402
    Regions,
    find_regions,
    merge_detections,
)
from object_detector_retinanet.keras_retinanet.postprocess.heat_map import (  # noqa: E402
    build_heat_map,
    render_heat_map,
    shrink_boxes,
)

DEFAULT_OUT = os.path.join(REPO_ROOT, "figures", "em_merger_panels.png")
FIGURE_WIDTH_PX = 1500
DPI = 100


@dataclass
class MergerSteps:
    """What the panels show, all from the merger's functions.

    Attributes:
        heat: (Hs, Ws) float64 heat map sampled every ``downscale`` px.
        downscale: the merger's sampling step s.
        mask: (Hs, Ws) uint8, the samples above the heat threshold.
        contours: external contours of ``mask`` in full-resolution pixels (sample centres).
        regions: the merger's regions (rectangles, K, validity).
        merged: (M, C) the rows the merger keeps.
    """

    heat: np.ndarray
    downscale: int
    mask: np.ndarray
    contours: list
    regions: Regions
    merged: np.ndarray


def merger_steps(
    rows: np.ndarray, shape: tuple[int, int], config: EmMergerConfig | None = None
) -> MergerSteps:
    """Run the merger's steps on ``rows`` ((N, 6+) [x1, y1, x2, y2, confidence, hard, ...]) of an
    image of ``shape`` (height, width) and keep what the panels draw."""
    config = config if config is not None else EmMergerConfig()
    height, width = int(shape[0]), int(shape[1])
    rows = np.asarray(rows, dtype=np.float64)
    boxes = np.trunc(rows[:, :4]).astype(np.int64)  # the merger's integer boxes (QUIRK, §10)
    gaussians = shrink_boxes(boxes, rows[:, 4], config.box_size_factor)
    heat_map, mask = build_heat_map(gaussians, height, width, config)
    s = heat_map.downscale
    heat = render_heat_map(gaussians, height, width, s)
    regions = find_regions(heat_map, mask, boxes, config)
    # The same OpenCV call as heat_map.find_contours, kept as polygons for drawing.
    found = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[-2]
    contours = [c.reshape(-1, 2) * s + s // 2 for c in found]
    merged = merge_detections(rows, (height, width), config)
    return MergerSteps(heat, s, mask, contours, regions, merged)


def draw_panels(
    image: np.ndarray,
    rows: np.ndarray,
    out_path: str | os.PathLike,
    config: EmMergerConfig | None = None,
    objects: int | None = None,
    width_px: int = FIGURE_WIDTH_PX,
) -> MergerSteps:
    """Write the three panels for the BGR ``image`` and its raw detections ``rows`` to a PNG.

    Args:
        image: uint8 (H, W, 3) BGR image the detections belong to.
        rows: (N, 6+) raw detections in ``image`` pixels.
        out_path: the PNG to write (its folder is created).
        config: merger settings (None: the paper's).
        objects: the true object count, shown in panel (e)'s title when given.
        width_px: figure width in pixels.

    Returns:
        The merger's steps that were drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Polygon, Rectangle

    height, width = image.shape[:2]
    steps = merger_steps(rows, (height, width), config)
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    extent = (0, width, height, 0)
    panel_in = width_px / DPI / 3
    figure, axes = plt.subplots(
        1, 3, figsize=(width_px / DPI, panel_in * height / width + 0.7), dpi=DPI
    )
    font = max(9, min(13, int(panel_in * 2.4)))

    heat_axis, region_axis, result_axis = axes
    heat_axis.imshow(steps.heat, cmap="inferno", extent=extent, interpolation="bilinear")
    heat_axis.set_title(f"(c) heat map of {len(rows)} raw detections", fontsize=font)

    region_axis.imshow(rgb // 2 + 64, extent=extent)  # dimmed, so the outlines stand out
    tint = np.zeros(steps.mask.shape + (4,))
    tint[steps.mask > 0] = (0.2, 0.6, 1.0, 0.35)
    region_axis.imshow(tint, extent=extent, interpolation="nearest")
    for contour in steps.contours:
        if len(contour) > 1:
            region_axis.add_patch(Polygon(contour, closed=True, fill=False, ec="cyan", lw=1.0))
    regions = steps.regions
    for (x, y, w, h), k, valid in zip(regions.rect, regions.k, regions.valid):
        style = "-" if valid else ":"
        region_axis.add_patch(Rectangle((x, y), w, h, fill=False, ec="yellow", lw=0.8, ls=style))
        if valid:
            region_axis.text(
                x + 2, y + 2, f"K={k}", color="yellow", fontsize=font - 3, va="top", ha="left"
            )
    resolved = int(regions.valid.sum())
    estimate = int(regions.k[regions.valid].sum())
    region_axis.set_title(f"(d) contours: {resolved} regions, K = {estimate}", fontsize=font)

    result_axis.imshow(rgb, extent=extent)
    for x1, y1, x2, y2 in steps.merged[:, :4]:
        result_axis.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec="red", lw=1.2))
    title = f"(e) resolved: {len(steps.merged)} detections"
    if objects is not None:
        title += f" ({objects} objects)"
    result_axis.set_title(title, fontsize=font)

    for axis in axes:
        axis.set_xlim(0, width)
        axis.set_ylim(height, 0)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout(pad=0.4)
    out_path = os.fspath(out_path)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    figure.savefig(out_path, dpi=DPI)
    plt.close(figure)
    return steps


def simulated_scene(seed: int, height: int, width: int, regime: str = "easy"):
    """(image, ground-truth boxes, raw detections) of a synthetic shelf with simulated detector
    output (``bench_merger.simulate_detections``: rows [x1, y1, x2, y2, confidence, hard, soft])."""
    from object_detector_retinanet.keras_retinanet.utils.synthetic import render_scene

    rng = np.random.default_rng(seed)
    image, gt = render_scene(rng, height, width)
    return image, gt, simulate_detections(rng, gt, (height, width), regime)


def model_detections(model_path, image, backbone, score_threshold, hard_score_rate):
    """Raw detections of ``image`` by a trained model: predict's steps up to the merger (§9)."""
    from object_detector_retinanet.keras_retinanet.inference import Predictor

    predictor = Predictor.from_weights(
        model_path,
        backbone=backbone,
        score_threshold=score_threshold,
        hard_score_rate=hard_score_rate,
    )
    return predictor.detect(image)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default=DEFAULT_OUT, help="PNG to write (default %(default)s)")
    parser.add_argument("--model", help="weights file; with --image, detections by that model")
    parser.add_argument("--image", help="the image for --model")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--score-threshold", type=float, default=0.1)
    parser.add_argument("--hard_score_rate", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=3, help="synthetic shelf (default %(default)s)")
    parser.add_argument(
        "--size",
        default="480x640",
        metavar="HxW",
        help="synthetic shelf size (default %(default)s)",
    )
    parser.add_argument("--regime", choices=("easy", "weak"), default="easy")
    parser.add_argument("--width", type=int, default=FIGURE_WIDTH_PX, help="figure width, px")
    args = parser.parse_args(argv)
    if bool(args.model) != bool(args.image):
        parser.error("--model and --image go together")

    objects = None
    config = EmMergerConfig(hard_score_rate=args.hard_score_rate)
    if args.model:
        from object_detector_retinanet.keras_retinanet.utils.image import read_image_bgr

        image = read_image_bgr(args.image)
        rows = model_detections(
            args.model, image, args.backbone, args.score_threshold, args.hard_score_rate
        )
    else:
        height, width = (int(side) for side in args.size.lower().split("x"))
        image, gt, rows = simulated_scene(args.seed, height, width, args.regime)
        objects = len(gt)
    steps = draw_panels(image, rows, args.out, config, objects=objects, width_px=args.width)
    print(
        f"{len(rows)} raw detections, {int(steps.regions.valid.sum())} regions, "
        f"{len(steps.merged)} merged"
        + (f" ({objects} objects)" if objects is not None else "")
        + f"; heat map sampled every {steps.downscale} px. Wrote {args.out}"
    )
    return args.out


if __name__ == "__main__":
    main()
