"""Evaluation of SKU-110K detections: COCO-style AP/AR and counting errors (§12).

Implements the metrics of Goldman et al. (CVPR 2019), Table 2 (§12.1), with the protocol the
maintainers recommend (§12.2):

- **Detection** (AP@[.50:.05:.95], AP.50, AP.75, AR300, P@R=.5) with pycocotools' ``COCOeval``, set
  to ``maxDets=[300]`` *throughout*, ``areaRng=[all]``, IoU thresholds 0.50:0.05:0.95 and 101 recall
  points. The numbers are read straight from the accumulated ``precision`` / ``recall`` arrays at
  the 300 slot; ``COCOeval.summarize()`` is never used, because its headline AP is hard-wired to
  ``maxDets=100`` (and prints -1 when 100 is not among ``maxDets``).
- Boxes go to pycocotools as COCO ``[x, y, w, h]`` for both GT and detections. Writing
  ``[x1, y1, x2, y2]`` there is the community evaluator's old bug that inflated AP to about 0.859
  (eg4000/SKU110K_CVPR19 issue #55).
- **All** detections are used: nothing is truncated by score or count before pycocotools (which
  itself keeps the ``max_dets`` best-scoring per image).
- Images with GT but no detections count (their GT are misses); images with detections but no GT
  count (their detections are false positives).
- **Counting** (MAE, RMSE): ``c_i`` = number of GT boxes of image ``i``; ``ĉ_i`` = number of
  detections of image ``i`` with score **strictly greater than** ``count_threshold`` (default 0.5,
  the same rule by which ``predict`` draws detections, §11.2). The paper does not state a rule
  (§12.1); ``count_threshold=None`` counts every detection.

P@R=.5 is reported at two IoU thresholds, ``P@R=.5_IoU75`` and ``P@R=.5_IoU50``: the paper's text
does not say which IoU it used (a secondary summary says 0.75). It is the 101-point *interpolated*
precision at the recall threshold 0.5 (max precision over recall >= 0.5), i.e.
``precision[iou, recall=0.50]`` of COCOeval's array; 0 when recall 0.5 is never reached.

Evaluation is class-agnostic (one category), as is SKU-110K (§8.2): results CSVs carry no
label. The COCO objects are built in memory (no temporary files) and pycocotools' prints are
silenced. Matplotlib is imported lazily, only by the plotting helpers, and only through its Agg
canvas (no pyplot, no global backend change).

The results CSV itself is read by :mod:`.results_csv`; :func:`align_detections` joins what it
read to the GT images. No Keras or TensorFlow here: this module does metric maths on arrays.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections.abc import Iterable, Mapping

import numpy as np

from object_detector_retinanet.keras_retinanet.config import PredictConfig

# --- Protocol constants (§12.2). ---
MAX_DETS = 300  # "should actually be inf, but 300 is the actual upper bound for our benchmark"
AREA_RANGE_ALL = (0.0, 1e10)  # pycocotools' 'all' area range
CATEGORY_ID = 1  # one class; pycocotools treats id 0 like any other, 1 keeps COCO's convention
# ĉ_i counts detections with score > 0.5: the boxes predict draws (PredictConfig.draw_threshold).
DEFAULT_COUNT_THRESHOLD = PredictConfig.draw_threshold

# --- Plot file names written by evaluate_detections(plot_dir=...). ---
PR_PLOT_NAME = "precision_recall.png"
COUNT_PLOT_NAME = "counts.png"

# --- Paper results, SKU-110K test set (§12.3, from eg4000/SKU110K_CVPR19:Poster.pdf). ---
# Keys: AP@[.5:.95], AP at IoU .75, AR with 300 detections, precision at recall .5 (IoU not stated
# in the paper), MAE and RMSE of the per-image counts. None = N/A in the paper.
FULL_APPROACH = "Full approach (Soft-IoU & EM-Merger)"
PAPER_RESULTS: dict[str, dict[str, float | None]] = {
    "Monkey (random boxes)": {
        "AP": 0.0,
        "AP75": 0.0,
        "AR300": 0.010,
        "P@R=.5": 0.0,
        "MAE": None,
        "RMSE": None,
    },
    "Faster-RCNN": {
        "AP": 0.045,
        "AP75": 0.010,
        "AR300": 0.066,
        "P@R=.5": 0.0,
        "MAE": 107.46,
        "RMSE": 113.42,
    },
    "YOLO9000": {
        "AP": 0.094,
        "AP75": 0.073,
        "AR300": 0.111,
        "P@R=.5": 0.0,
        "MAE": 84.166,
        "RMSE": 97.809,
    },
    "RetinaNet": {
        "AP": 0.455,
        "AP75": 0.389,
        "AR300": 0.530,
        "P@R=.5": 0.544,
        "MAE": 16.584,
        "RMSE": 30.702,
    },
    "Base & NMS": {
        "AP": 0.413,
        "AP75": 0.384,
        "AR300": 0.484,
        "P@R=.5": 0.491,
        "MAE": 24.962,
        "RMSE": 34.382,
    },
    "Soft-IoU & NMS": {
        "AP": 0.418,
        "AP75": 0.386,
        "AR300": 0.483,
        "P@R=.5": 0.492,
        "MAE": 25.394,
        "RMSE": 34.729,
    },
    # RMSE 283.971 is out of line with every other row: probably a typo in the poster (§12.3).
    "Base & EM-Merger": {
        "AP": 0.482,
        "AP75": 0.540,
        "AR300": 0.553,
        "P@R=.5": 0.802,
        "MAE": 23.978,
        "RMSE": 283.971,
    },
    FULL_APPROACH: {
        "AP": 0.492,
        "AP75": 0.556,
        "AR300": 0.554,
        "P@R=.5": 0.834,
        "MAE": 14.522,
        "RMSE": 23.992,
    },
}
# The released weights re-scored with pycocotools, maxDets=300, xywh boxes (§12.3, from the
# ParallelDots/generic-sku-detection-benchmark README). Same protocol as this module.
RELEASED_WEIGHTS_COCO: dict[str, float] = {
    "AP": 0.514,
    "AP50": 0.853,
    "AP75": 0.569,
    "AR300": 0.571,
    "AR300_IoU50": 0.872,
}


# ---------------------------------------------------------------------------------------------
# Box and input helpers
# ---------------------------------------------------------------------------------------------
def to_coco_xywh(boxes: np.ndarray) -> np.ndarray:
    """Corner boxes ``(N, 4)`` ``(x1, y1, x2, y2)`` → COCO ``(N, 4)`` ``(x, y, w, h)``, float64.

    ``[10, 20, 30, 60]`` → ``[10, 20, 20, 40]``. Extra columns (e.g. a score) are dropped; a single
    box ``(4,)`` gives ``(4,)``; an empty input gives ``(0, 4)``.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if boxes.ndim not in (1, 2) or boxes.shape[-1] < 4:
        raise ValueError(f"boxes must be (N, 4) (x1, y1, x2, y2), got shape {boxes.shape}")
    xywh = boxes[..., :4].copy()
    xywh[..., 2] = boxes[..., 2] - boxes[..., 0]
    xywh[..., 3] = boxes[..., 3] - boxes[..., 1]
    return xywh


def _as_array(name: str, what: str, value, columns: int) -> np.ndarray:
    """``value`` as float64 ``(K, columns)`` (K may be 0), or a ValueError naming the image."""
    if isinstance(value, Mapping):  # an annotations dict {"bboxes": (M, 4), "labels": (M,)}
        value = value["bboxes"]
    array = np.asarray(value, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, columns), dtype=np.float64)
    if array.ndim != 2 or array.shape[1] < columns:
        raise ValueError(
            f"{what} of image {name!r}: expected shape (K, {columns}), got {array.shape}"
        )
    array = array[:, :columns]
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} of image {name!r}: non-finite values")
    return array


def _image_names(gt: Mapping, dets: Mapping) -> list[str]:
    """GT images in GT order, then images that only have detections (their boxes are FPs)."""
    return list(gt) + [name for name in dets if name not in gt]


# ---------------------------------------------------------------------------------------------
# COCO-style detection metrics
# ---------------------------------------------------------------------------------------------
def _coco_annotation(ann_id: int, image_id: int, xywh: list[float], score=None) -> dict:
    """One COCO box annotation; a detection when it has a ``score``.

    Ids start at 1: COCOeval reads a match id of 0 as "unmatched".
    """
    x, y, w, h = xywh
    annotation = {
        "id": ann_id,
        "image_id": image_id,
        "category_id": CATEGORY_ID,
        "bbox": [x, y, w, h],
        "area": w * h,
        "iscrowd": 0,
    }
    if score is not None:
        annotation["score"] = score
    return annotation


def run_coco_eval(
    gt: Mapping[str, np.ndarray], dets: Mapping[str, np.ndarray], max_dets: int = MAX_DETS
):
    """Run pycocotools' ``COCOeval`` (bbox) under the protocol of §12.2 and accumulate it.

    Args:
        gt: image name → GT boxes ``(M, 4)`` ``(x1, y1, x2, y2)`` (or an annotations dict with a
            ``"bboxes"`` entry). M may be 0.
        dets: image name → detections ``(N, 5)`` ``(x1, y1, x2, y2, score)``. N may be 0; images
            missing from ``dets`` have no detections; images missing from ``gt`` have no GT.
        max_dets: detections kept per image (best scores first); the only ``maxDets`` slot.

    Returns:
        The accumulated ``COCOeval``: ``.eval["precision"]`` is ``(10, 101, 1, 1, 1)`` and
        ``.eval["recall"]`` is ``(10, 1, 1, 1)`` (IoU threshold, recall point, class, area range,
        maxDets).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if max_dets < 1:
        raise ValueError(f"max_dets must be >= 1, got {max_dets}")
    names = _image_names(gt, dets)
    images = [{"id": i, "file_name": name} for i, name in enumerate(names, start=1)]
    categories = [{"id": CATEGORY_ID, "name": "object"}]
    gt_anns: list[dict] = []
    dt_anns: list[dict] = []
    for image_id, name in enumerate(names, start=1):
        gt_boxes = _as_array(name, "GT boxes", gt.get(name, ()), 4)
        for box in to_coco_xywh(gt_boxes).tolist():
            gt_anns.append(_coco_annotation(len(gt_anns) + 1, image_id, box))
        det = _as_array(name, "detections", dets.get(name, ()), 5)
        for box, score in zip(to_coco_xywh(det).tolist(), det[:, 4].tolist()):
            dt_anns.append(_coco_annotation(len(dt_anns) + 1, image_id, box, score))

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": gt_anns, "categories": categories}
        coco_gt.createIndex()
        # Built directly rather than with loadRes(), which fails on an empty detection list.
        coco_dt = COCO()
        coco_dt.dataset = {"images": images, "annotations": dt_anns, "categories": categories}
        coco_dt.createIndex()

        coco_eval = COCOeval(coco_gt, coco_dt, iouType="bbox")
        params = coco_eval.params
        params.imgIds = [image["id"] for image in images]
        params.catIds = [CATEGORY_ID]
        params.maxDets = [int(max_dets)]  # §12.2: 300 throughout, never the [1, 10, 100] default
        params.areaRng = [list(AREA_RANGE_ALL)]
        params.areaRngLbl = ["all"]
        # iouThrs (0.50:0.05:0.95) and recThrs (101 points) are pycocotools' defaults; asserted:
        assert len(params.iouThrs) == 10 and np.isclose(params.iouThrs[0], 0.5)
        assert len(params.recThrs) == 101
        coco_eval.evaluate()
        coco_eval.accumulate()
    return coco_eval


def _index_of(value: float, grid, what: str) -> int:
    """Position of ``value`` in one of COCOeval's grids (``iouThrs``, ``recThrs``)."""
    grid = np.asarray(grid)
    matches = np.flatnonzero(np.isclose(grid, value))
    if matches.size != 1:
        raise ValueError(f"{what} {value} is not one of the {grid.size} points {grid.tolist()}")
    return int(matches[0])


def _iou_index(coco_eval, iou: float) -> int:
    return _index_of(iou, coco_eval.params.iouThrs, "IoU threshold")


def _recall_index(coco_eval, recall: float) -> int:
    return _index_of(recall, coco_eval.params.recThrs, "recall")


def _mean_or_nan(values: np.ndarray) -> float:
    # COCOeval leaves -1 where nothing is defined (no GT box at all): report NaN, not -1.
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0 or np.any(values < 0):
        return math.nan
    return float(values.mean())


def metrics_from_coco_eval(coco_eval) -> dict[str, float]:
    """The scalar metrics of an accumulated ``run_coco_eval`` result, read at its maxDets slot.

    Returns:
        ``AP`` (mean over IoU .50:.05:.95 and the 101 recall points), ``AP50``, ``AP75``,
        ``AR<max_dets>`` (recall with at most ``max_dets`` detections per image, mean over the ten
        IoU thresholds), ``AR<max_dets>_IoU50``, ``P@R=.5_IoU75`` and ``P@R=.5_IoU50``
        (interpolated precision at recall 0.5), and ``max_dets``. NaN when the GT has no box.
    """
    max_dets = int(coco_eval.params.maxDets[-1])
    # (T, R, K, A, M) → (T, R) for the one class, the 'all' area range and the max_dets slot.
    precision = coco_eval.eval["precision"][:, :, 0, 0, -1]
    recall = coco_eval.eval["recall"][:, 0, 0, -1]  # (T,)
    i50, i75 = _iou_index(coco_eval, 0.5), _iou_index(coco_eval, 0.75)
    r50 = _recall_index(coco_eval, 0.5)
    return {
        "AP": _mean_or_nan(precision),
        "AP50": _mean_or_nan(precision[i50]),
        "AP75": _mean_or_nan(precision[i75]),
        f"AR{max_dets}": _mean_or_nan(recall),
        f"AR{max_dets}_IoU50": _mean_or_nan(recall[i50]),
        "P@R=.5_IoU75": _mean_or_nan(precision[i75, r50]),
        "P@R=.5_IoU50": _mean_or_nan(precision[i50, r50]),
        "max_dets": max_dets,
    }


def precision_recall_curves(
    coco_eval, iou_thresholds: Iterable[float] = (0.5, 0.75)
) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    """101-point interpolated PR curves of an accumulated ``COCOeval`` at the given IoU thresholds.

    Returns:
        IoU threshold → ``(recall points (101,), precision (101,))``; precision is 0 beyond the
        highest recall reached and -1 everywhere when the GT has no box.
    """
    recall_points = np.asarray(coco_eval.params.recThrs, dtype=np.float64)
    precision = coco_eval.eval["precision"][:, :, 0, 0, -1]
    return {
        float(iou): (recall_points.copy(), precision[_iou_index(coco_eval, iou)].copy())
        for iou in iou_thresholds
    }


def coco_metrics(
    gt: Mapping[str, np.ndarray], dets: Mapping[str, np.ndarray], max_dets: int = MAX_DETS
) -> dict[str, float]:
    """COCO-style detection metrics of §12.1 under the protocol of §12.2.

    Args:
        gt: image name → GT boxes ``(M, 4)`` ``(x1, y1, x2, y2)``.
        dets: image name → detections ``(N, 5)`` ``(x1, y1, x2, y2, score)``.
        max_dets: the only ``maxDets`` value (300 for SKU-110K).

    Returns:
        See :func:`metrics_from_coco_eval` (``AP``, ``AP50``, ``AP75``, ``AR300``, ...).
    """
    return metrics_from_coco_eval(run_coco_eval(gt, dets, max_dets))


# ---------------------------------------------------------------------------------------------
# Counting metrics
# ---------------------------------------------------------------------------------------------
def count_errors(gt_counts: Iterable[float], pred_counts: Iterable[float]) -> dict[str, float]:
    """MAE and RMSE of per-image object counts (§12.1).

    ``MAE = (1/N) Σ |ĉ_i − c_i|``, ``RMSE = sqrt((1/N) Σ (ĉ_i − c_i)²)``.

    Args:
        gt_counts: ``(N,)`` true counts ``c_i``.
        pred_counts: ``(N,)`` predicted counts ``ĉ_i``, same image order.
    """
    gt_counts = np.asarray(list(gt_counts), dtype=np.float64)
    pred_counts = np.asarray(list(pred_counts), dtype=np.float64)
    if gt_counts.shape != pred_counts.shape:
        raise ValueError(f"count lists differ in length: {gt_counts.size} vs {pred_counts.size}")
    if gt_counts.size == 0:
        raise ValueError("no images to count")
    diff = pred_counts - gt_counts
    return {"MAE": float(np.mean(np.abs(diff))), "RMSE": float(np.sqrt(np.mean(diff**2)))}


def image_counts(
    gt: Mapping[str, np.ndarray],
    dets: Mapping[str, np.ndarray],
    count_threshold: float | None = DEFAULT_COUNT_THRESHOLD,
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per-image true and predicted counts, over the same images as :func:`run_coco_eval`.

    ``ĉ_i`` = detections with score ``> count_threshold`` (every detection when None).

    Returns:
        ``(names, gt_counts (N,), pred_counts (N,))`` as int64.
    """
    names = _image_names(gt, dets)
    gt_counts = np.array([len(_as_array(n, "GT boxes", gt.get(n, ()), 4)) for n in names], np.int64)
    pred_counts = []
    for name in names:
        scores = _as_array(name, "detections", dets.get(name, ()), 5)[:, 4]
        pred_counts.append(
            scores.size
            if count_threshold is None
            else int(np.count_nonzero(scores > count_threshold))
        )
    return names, gt_counts, np.asarray(pred_counts, dtype=np.int64)


def evaluate_detections(
    gt: Mapping[str, np.ndarray],
    dets: Mapping[str, np.ndarray],
    count_threshold: float | None = DEFAULT_COUNT_THRESHOLD,
    max_dets: int = MAX_DETS,
    plot_dir: str | os.PathLike | None = None,
) -> dict[str, float]:
    """All metrics of the paper's Table 2 (§12.1) for one set of detections.

    Args:
        gt: image name → GT boxes ``(M, 4)`` ``(x1, y1, x2, y2)`` (or annotations dicts). The
            evaluated images are these plus any image that only has detections.
        dets: image name → detections ``(N, 5)`` ``(x1, y1, x2, y2, score)``; absent = none.
        count_threshold: ``ĉ_i`` counts detections with score strictly above it; None counts all.
        max_dets: detections per image for the COCO metrics (300).
        plot_dir: if given, also write ``precision_recall.png`` and ``counts.png`` there.

    Returns:
        :func:`coco_metrics` plus ``MAE``, ``RMSE``, ``count_threshold`` (None = all counted) and
        ``num_images``.
    """
    names, gt_counts, pred_counts = image_counts(gt, dets, count_threshold)
    if not names:
        raise ValueError("nothing to evaluate: no images in the GT or the detections")
    coco_eval = run_coco_eval(gt, dets, max_dets)
    metrics: dict = metrics_from_coco_eval(coco_eval)
    metrics.update(count_errors(gt_counts, pred_counts))
    metrics["count_threshold"] = count_threshold
    metrics["num_images"] = len(names)
    if plot_dir is not None:
        os.makedirs(plot_dir, exist_ok=True)
        plot_precision_recall(
            precision_recall_curves(coco_eval), os.path.join(plot_dir, PR_PLOT_NAME)
        )
        plot_counts(
            gt_counts,
            pred_counts,
            os.path.join(plot_dir, COUNT_PLOT_NAME),
            count_threshold=count_threshold,
        )
    return metrics


# ---------------------------------------------------------------------------------------------
# Joining predict's results with the GT (§12.2)
# ---------------------------------------------------------------------------------------------
def align_detections(
    gt_names: Iterable[str],
    dets: Mapping[str, np.ndarray],
    source: str = "the results",
    gt_source: str = "the ground truth",
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Join detections to the GT images by file name (§12.2).

    Args:
        gt_names: the GT image names (order kept).
        dets: image name → detections ``(N, 5)``.
        source, gt_source: how to name the two inputs in the error message (e.g. their paths).

    Returns:
        ``(aligned, missing)``: detections for every GT image, in GT order, with an empty
        ``(0, 5)`` array for GT images absent from ``dets``; and the names of those images.

    Raises:
        ValueError: naming the images of ``dets`` that are not GT images (likely the wrong GT
            file, e.g. the val CSV for test results).
    """
    gt_names = list(gt_names)
    known = set(gt_names)
    extra = [name for name in dets if name not in known]
    if extra:
        shown = ", ".join(extra[:5]) + (", ..." if len(extra) > 5 else "")
        raise ValueError(
            f"{len(extra)} image(s) in {source} are not in {gt_source}: {shown}. "
            "Is this the right annotations file (e.g. annotations_test.csv for test results)?"
        )
    missing = [name for name in gt_names if name not in dets]
    empty = np.zeros((0, 5), dtype=np.float64)
    aligned = {
        name: (np.asarray(dets[name], np.float64) if name in dets else empty.copy())
        for name in gt_names
    }
    return aligned, missing


# ---------------------------------------------------------------------------------------------
# Plots (matplotlib's Agg canvas, imported lazily)
# ---------------------------------------------------------------------------------------------
def _new_figure(size=(6.0, 5.0)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(figure)
    return figure


def plot_precision_recall(
    curves: Mapping[float, tuple[np.ndarray, np.ndarray]],
    path: str | os.PathLike,
    title: str = "Precision-recall (101-point interpolated, COCOeval)",
) -> str:
    """Save the PR curves of :func:`precision_recall_curves` (e.g. IoU .5 and .75) as a PNG.

    The P@R=.5 point of each curve is marked with a dot and its value given in the legend.
    Returns the path written.
    """
    figure = _new_figure()
    axes = figure.add_subplot(1, 1, 1)
    for iou, (recall, precision) in sorted(curves.items()):
        recall = np.asarray(recall, dtype=np.float64)
        precision = np.asarray(precision, dtype=np.float64)
        if np.any(precision < 0):  # undefined (no GT box)
            continue
        at_half = float(np.interp(0.5, recall, precision))
        # The values go into the legend: curves that nearly coincide would overprint labels.
        label = f"IoU {iou:.2f}: AP {precision.mean():.3f}, P@R=.5 {at_half:.3f} (dot)"
        (line,) = axes.plot(recall, precision, label=label)
        axes.plot([0.5], [at_half], "o", color=line.get_color())
    axes.set_xlim(0.0, 1.0)
    axes.set_ylim(0.0, 1.02)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower left")
    path = os.fspath(path)
    figure.savefig(path, format="png")
    return path


def plot_counts(
    gt_counts: Iterable[float],
    pred_counts: Iterable[float],
    path: str | os.PathLike,
    count_threshold: float | None = DEFAULT_COUNT_THRESHOLD,
    title: str = "Objects per image",
) -> str:
    """Save a scatter plot of predicted vs true per-image counts (with the y = x line) as a PNG.

    Returns the path written.
    """
    gt_counts = np.asarray(list(gt_counts), dtype=np.float64)
    pred_counts = np.asarray(list(pred_counts), dtype=np.float64)
    errors = count_errors(gt_counts, pred_counts)
    figure = _new_figure()
    axes = figure.add_subplot(1, 1, 1)
    axes.scatter(gt_counts, pred_counts, s=16, alpha=0.6, clip_on=False)
    top = max(float(gt_counts.max()), float(pred_counts.max()), 1.0) * 1.05
    axes.plot([0.0, top], [0.0, top], "k--", linewidth=1, label="predicted = true")
    axes.set_xlim(0.0, top)
    axes.set_ylim(0.0, top)
    axes.set_xlabel("true count (GT boxes)")
    rule = (
        "all detections"
        if count_threshold is None
        else f"detections with score > {count_threshold}"
    )
    axes.set_ylabel(f"predicted count ({rule})")
    axes.set_title(f"{title}: MAE {errors['MAE']:.2f}, RMSE {errors['RMSE']:.2f}")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper left")
    path = os.fspath(path)
    figure.savefig(path, format="png")
    return path
