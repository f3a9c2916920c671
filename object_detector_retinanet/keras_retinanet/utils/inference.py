"""The per-image inference loop of ``predict`` (§9, §11; the original's ``predict_iou.py``).

For every image, in the generator's CSV order, this module runs one short script (Goldman et al.,
CVPR 2019, §3-§4: Soft-IoU scores feeding the EM-Merger):

1. load the original BGR image; caffe mean subtraction; resize to 800 / max 1333 (§9.2);
2. run the network (passed in as a callable, so this module never imports Keras) on a batch of one;
3. mix the scores: ``confidence = r * hard + (1 - r) * soft`` (§9.4);
4. rescale the boxes to original-image pixels (``boxes / scale``, §9.5);
5. keep ``hard > score_threshold`` (§9.6; this also drops the ``-1`` padding);
6. sort by confidence, descending, and keep the first ``max_detections`` (§9.7);
7. EM-merge the ``(N, 7)`` rows ``[x1, y1, x2, y2, confidence, hard_score, label]`` (§10);
8. append the merged rows to the results CSV, flushed per image (§11.1, B18);
9. optionally draw ``{i}.png``: ground truth in green when there is any (B7), then the merged
   detections with confidence > 0.5 in red (§11.2).

Every path is an explicit argument: nothing here knows the data root (B1, B2, B3).
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import re
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from object_detector_retinanet.keras_retinanet.config import (
    EmMergerConfig,
    PredictConfig,
    TrainConfig,
)
from object_detector_retinanet.keras_retinanet.postprocess.em_merger import merge_detections

# Re-exported: callers import nms_merge from here until this module is reorganised.
from object_detector_retinanet.keras_retinanet.postprocess.nms import nms_merge  # noqa: F401
from object_detector_retinanet.keras_retinanet.utils.image import preprocess_image, resize_image
from object_detector_retinanet.keras_retinanet.utils.visualization import (
    DETECTION_COLOR,
    GT_COLOR,
    box_thickness,
    draw_annotations,
    draw_detections,
)
from object_detector_retinanet.utils import create_folder, safe_timestamp

RESULTS_HEADER = ("image_id", "x1", "y1", "x2", "y2", "confidence", "hard_score")  # §11.1
RESULTS_PREFIX = "detections_output_iou_"  # §11.1: kept, followed by "{rate}_{stamp}.csv"

# Column indices of the (N, 7) detection rows fed to the EM-Merger (§9.8).
X1, Y1, X2, Y2, CONFIDENCE, HARD_SCORE, LABEL = range(7)

# run_model(batch (1, H, W, 3) float32)
#     -> (boxes (1, K, 4), hard (1, K), labels (1, K), soft (1, K, C)), arrays or tensors
RunModel = Callable[[np.ndarray], Sequence[Any]]


# --------------------------------------------------------------------------------------------------
# Scores and raw detections (§9.3-§9.8)
# --------------------------------------------------------------------------------------------------


def mix_scores(hard: np.ndarray, soft: np.ndarray, hard_score_rate: float) -> np.ndarray:
    """The combined confidence ``r * hard + (1 - r) * soft`` (§9.4).

    Args:
        hard: Classification ("hard") scores, any shape.
        soft: Soft-IoU ("soft") scores, broadcastable to ``hard``.
        hard_score_rate: ``r`` (``--hard_score_rate``, default 0.5); 1 = hard only, 0 = soft only
            (the paper's setting).

    Returns:
        The confidence in the inputs' dtype (``r`` is used as a Python float, so float32 scores
        stay float32).
    """
    rate = float(hard_score_rate)
    return rate * np.asarray(hard) + (1.0 - rate) * np.asarray(soft)


def raw_detections(
    boxes: np.ndarray,
    hard: np.ndarray,
    soft: np.ndarray,
    labels: np.ndarray,
    scale: float,
    score_threshold: float = PredictConfig.score_threshold,
    hard_score_rate: float = PredictConfig.hard_score_rate,
    max_detections: int = PredictConfig.max_detections,
) -> np.ndarray:
    """One image's network outputs → the rows the EM-Merger takes (§9.3-§9.8).

    Args:
        boxes: ``(K, 4)`` boxes ``(x1, y1, x2, y2)`` in pixels of the *resized* network input.
        hard: ``(K,)`` hard scores; ``-1`` marks padding rows.
        soft: ``(K,)`` or ``(K, 1)`` soft (predicted IoU) scores.
        labels: ``(K,)`` class labels.
        scale: The resize factor applied to the image (``resized = original * scale``).
        score_threshold: Keep rows with ``hard > score_threshold`` (strictly).
        hard_score_rate: ``r`` of :func:`mix_scores`.
        max_detections: Keep at most this many rows, the most confident first.

    Returns:
        ``(N, 7)`` float64 rows ``[x1, y1, x2, y2, confidence, hard_score, label]``, boxes in
        original-image pixels (floats), sorted by confidence descending (stable: ties keep the
        network's order). Degenerate boxes (``x2 <= x1`` or ``y2 <= y1``) are dropped.

    Raises:
        ValueError: If ``soft`` has more than one class column (B24), or if the shapes disagree.
    """
    boxes = np.asarray(boxes)
    hard = np.asarray(hard)
    soft = np.asarray(soft)
    labels = np.asarray(labels)
    if soft.ndim == 2:
        if soft.shape[1] != 1:
            # B24: the original squeezed axis -1 and crashed for C > 1 (issue #16).
            raise ValueError(
                f"raw_detections: the soft (IoU) scores have {soft.shape[1]} class columns, shape "
                f"{soft.shape}; SKU-110K inference requires a single-class model (num_classes == 1)"
            )
        soft = soft[:, 0]
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"raw_detections: boxes must be (K, 4), got shape {boxes.shape}")
    num = boxes.shape[0]
    for name, array in (("hard", hard), ("soft", soft), ("labels", labels)):
        if array.shape != (num,):
            raise ValueError(
                f"raw_detections: {name} must have shape ({num},) to match boxes {boxes.shape}, "
                f"got {array.shape}"
            )

    # QUIRK: arithmetic in the network's dtype (float32) with Python-float factors, as the original.
    confidence = mix_scores(hard, soft, hard_score_rate)
    boxes = boxes / float(scale)

    # strict '>' also drops the -1 padding. Deviation: boxes with x2 <= x1 or y2 <= y1 (an
    # untrained or diverged regression head can produce them; clipping to the input can collapse
    # them) are dropped here: they cannot be objects, and the merger rejects them.
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    keep = np.flatnonzero((hard > score_threshold) & valid)
    order = keep[np.argsort(-confidence[keep], kind="stable")][: int(max_detections)]

    rows = np.empty((order.size, 7), dtype=np.float64)
    rows[:, X1 : Y2 + 1] = boxes[order]
    rows[:, CONFIDENCE] = confidence[order]
    rows[:, HARD_SCORE] = hard[order]
    rows[:, LABEL] = labels[order]
    return rows


def detect_image(
    image: np.ndarray,
    run_model: RunModel,
    hard_score_rate: float = PredictConfig.hard_score_rate,
    score_threshold: float = PredictConfig.score_threshold,
    max_detections: int = PredictConfig.max_detections,
    image_min_side: int = TrainConfig.image_min_side,
    image_max_side: int = TrainConfig.image_max_side,
) -> np.ndarray:
    """Run the network on one original BGR image and return its pre-merger rows (§9.2-§9.8).

    Args:
        image: ``uint8 (H, W, 3)`` BGR image as loaded from disk.
        run_model: ``batch (1, H', W', 3) float32 -> (boxes (1, K, 4), hard (1, K), labels (1, K),
            soft (1, K, C))`` (NumPy arrays or tensors).
        hard_score_rate, score_threshold, max_detections: See :func:`raw_detections`.
        image_min_side, image_max_side: Inference resize (§4.3: 800 / 1333).

    Returns:
        ``(N, 7)`` float64 rows, see :func:`raw_detections`.
    """
    network_input = preprocess_image(image)  # caffe mean subtraction first, then resize (§9.2)
    network_input, scale = resize_image(
        network_input, min_side=image_min_side, max_side=image_max_side
    )
    batch = np.expand_dims(np.asarray(network_input, dtype=np.float32), axis=0)
    outputs = run_model(batch)
    if len(outputs) != 4:
        raise ValueError(
            f"run_model must return (boxes, hard_scores, labels, soft_scores), got {len(outputs)} "
            "outputs"
        )
    boxes, hard, labels, soft = (np.asarray(output)[0] for output in outputs)
    return raw_detections(
        boxes,
        hard,
        soft,
        labels,
        scale,
        score_threshold=score_threshold,
        hard_score_rate=hard_score_rate,
        max_detections=max_detections,
    )


# --------------------------------------------------------------------------------------------------
# Results CSV (§11.1, B18)
# --------------------------------------------------------------------------------------------------


def image_id_for(path: str | os.PathLike) -> str:
    """``"<parent folder>/<file name>"`` of an image path, e.g. ``images/test_0.jpg`` (§11.1).

    Always joined with ``/`` so the CSV is the same on every OS.
    """
    path = os.path.normpath(os.fspath(path))
    return f"{os.path.basename(os.path.dirname(path))}/{os.path.basename(path)}"


def results_filename(
    out_dir: str | os.PathLike, hard_score_rate: float, stamp: str | None = None
) -> str:
    """``out_dir/detections_output_iou_{rate}_{stamp}.csv`` (§11.1).

    Args:
        out_dir: Results folder.
        hard_score_rate: ``r``, written as a float (``0.5``, ``1.0``), as the original did.
        stamp: Timestamp text; default :func:`safe_timestamp` now. Any character that is not safe in
            a file name on every OS is replaced by ``_`` (B18: the original had spaces and colons).

    Returns:
        The path (the file is not created).
    """
    stamp = safe_timestamp() if stamp is None else re.sub(r"[^0-9A-Za-z_.-]", "_", str(stamp))
    return os.path.join(os.fspath(out_dir), f"{RESULTS_PREFIX}{float(hard_score_rate)}_{stamp}.csv")


class ResultsWriter:
    """Writes the results CSV incrementally: header at open, each image's rows flushed (B18).

    The original collected every row and wrote the file at the very end, so a crash on image 2,000
    of 2,941 lost everything. Here the file on disk always holds every image finished so far.

    Usage::

        with ResultsWriter(path) as writer:
            writer.write_image("images/test_0.jpg", merged_rows)

    Attributes:
        path: The CSV path.
        rows_written: Detection rows written so far (header excluded).
        images_written: Calls to :meth:`write_image` so far.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self.rows_written = 0
        self.images_written = 0
        self._file = None
        self._writer = None

    def open(self) -> ResultsWriter:
        """Create the file (and its folder) and write the header; returns ``self``."""
        folder = os.path.dirname(self.path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        self._file = open(self.path, "w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        self._writer.writerow(RESULTS_HEADER)
        self._file.flush()
        return self

    def write_image(self, image_id: str, detections: np.ndarray) -> None:
        """Append one image's detections and flush them to the OS.

        Args:
            image_id: ``"<parent folder>/<file name>"`` (see :func:`image_id_for`).
            detections: ``(N, >= 6)`` rows ``[x1, y1, x2, y2, confidence, hard_score, ...]``;
                boxes are written truncated to integers (§11.1), extra columns are ignored.
                ``N`` may be 0.
        """
        if self._writer is None:
            raise RuntimeError(
                f"ResultsWriter({self.path!r}) is not open; use it as a context manager"
            )
        detections = np.asarray(detections, dtype=np.float64)
        if detections.size == 0:
            detections = detections.reshape(0, 7)
        if detections.ndim != 2 or detections.shape[1] < 6:
            raise ValueError(
                f"write_image({image_id!r}): detections must be (N, >= 6) "
                "[x1, y1, x2, y2, confidence, hard_score, ...], "
                f"got shape {detections.shape}"
            )
        corners = detections[:, :4].astype(np.int64)  # truncation toward zero, as the original
        for box, row in zip(corners.tolist(), detections):
            self._writer.writerow([image_id, *box, float(row[CONFIDENCE]), float(row[HARD_SCORE])])
        self._file.flush()
        self.rows_written += len(detections)
        self.images_written += 1

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._file is not None:
            self._file.close()
        self._file = None
        self._writer = None

    def __enter__(self) -> ResultsWriter:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------------
# Drawing (§11.2)
# --------------------------------------------------------------------------------------------------


def draw_image(
    image: np.ndarray,
    detections: np.ndarray,
    annotations: dict[str, np.ndarray] | None = None,
    label_to_name: Any = None,
    draw_threshold: float = PredictConfig.draw_threshold,
    captions: bool = False,
) -> np.ndarray:
    """A copy of ``image`` with ground truth (if any), then merged detections drawn (§11.2).

    Boxes are 1 px wide on images under 512 px and 2 px (the original's) above
    (:func:`box_thickness`). Captions (class names on the ground truth, ``"<hard>: <confidence>"``
    on detections) are off by default: on a packed shelf they cover the neighbouring products.

    Args:
        image: ``uint8 (H, W, 3)`` original BGR image (not modified).
        detections: ``(N, >= 6)`` merged rows, boxes in pixels of ``image``.
        annotations: Ground truth ``{"bboxes", "labels"}``, drawn green first; ``None`` skips it
            (B7).
        label_to_name: Caption source for ground truth (callable or mapping).
        draw_threshold: Detections with ``confidence > draw_threshold`` are drawn, in red.
        captions: Write the captions the original wrote.

    Returns:
        The drawn ``uint8 (H, W, 3)`` image.
    """
    canvas = np.array(image, dtype=np.uint8, copy=True)
    style = {"captions": captions, "thickness": box_thickness(canvas.shape)}
    if annotations is not None:
        draw_annotations(canvas, annotations, label_to_name, color=GT_COLOR, **style)
    detections = np.asarray(detections, dtype=np.float64)
    if detections.size == 0:
        detections = detections.reshape(0, 7)
    draw_detections(
        canvas,
        detections[:, :4],
        detections[:, CONFIDENCE],
        detections[:, HARD_SCORE],
        threshold=draw_threshold,
        color=DETECTION_COLOR,
        **style,
    )
    return canvas


# --------------------------------------------------------------------------------------------------
# The loop (§9, §11)
# --------------------------------------------------------------------------------------------------


@dataclass
class _ImageJob:
    """One image between the network and the CSV: what finishing it needs."""

    index: int
    image_id: str
    image: np.ndarray | None  # kept only when drawing
    detections: np.ndarray  # (N, 7) pre-merger rows
    shape: tuple[int, int]  # (height, width) of the original image
    future: Future | None = None  # the merge, when it runs in a worker process


def _image_path(generator: Any, index: int) -> str:
    """The generator's path for image ``index`` (falls back to its name)."""
    if hasattr(generator, "image_path"):
        return os.fspath(generator.image_path(index))
    return os.fspath(generator.image_names[index])


def predict_images(
    generator: Any,
    run_model: RunModel,
    results_path: str | os.PathLike,
    save_dir: str | os.PathLike | None = None,
    hard_score_rate: float = PredictConfig.hard_score_rate,
    score_threshold: float = PredictConfig.score_threshold,
    max_detections: int = PredictConfig.max_detections,
    merger_config: EmMergerConfig | None = None,
    merge_fn: Callable[[np.ndarray, tuple[int, int], Any], np.ndarray] | None = None,
    image_min_side: int = TrainConfig.image_min_side,
    image_max_side: int = TrainConfig.image_max_side,
    draw_threshold: float = PredictConfig.draw_threshold,
    progress: bool = True,
    merge_processes: int | None = None,
    captions: bool = False,
) -> str:
    """Predict every image of ``generator``, EM-merge, write the results CSV and optional drawings.

    Args:
        generator: A CSV generator (``size()``, ``load_image(i)`` → ``uint8`` BGR,
            ``image_path(i)``, ``has_ground_truth``, ``load_annotations(i)``, ``label_to_name``),
            read in its CSV order.
        run_model: The inference network as a callable, see :func:`detect_image`.
        results_path: The CSV to write (see :func:`results_filename`); its folder is created.
        save_dir: When given, ``save_dir/{i}.png`` is drawn for every image loaded (``i`` = 0-based
            CSV position, §11.2); the folder is created.
        hard_score_rate, score_threshold, max_detections: See :func:`raw_detections`.
        merger_config: EM-Merger settings; ``None`` = the paper's (§10.1).
        merge_fn: ``merge_fn(detections, (height, width), merger_config)``, the post-processor:
            ``None`` = the EM-Merger (:func:`merge_detections`), or e.g. :func:`nms_merge`
            for the paper's NMS baselines
            (a module-level function, so process pools can pickle it).
        image_min_side, image_max_side: Inference resize.
        draw_threshold: Drawn detections need ``confidence > draw_threshold`` (§11.2: 0.5).
        progress: Show a tqdm progress bar.
        merge_processes: How the EM-Merger overlaps the network. ``None``: no overlap, merge
            right after the network (the original's order). ``0``: merge image ``i`` in one
            background thread while the network runs on image ``i + 1`` (no start-up cost; the
            network releases the GIL). ``n >= 1``: merge in ``n`` worker processes ("spawn"
            start, safe with TensorFlow loaded; each worker imports the main script once, about
            a second, so keep heavy imports out of its top level) -- worth it only when merging
            is slower than the network. In every mode rows are written in CSV order and equal
            the serial path's (the merger is deterministic, its budgets count work, not time).
        captions: Write the original's captions on the drawings (see :func:`draw_image`).

    Returns:
        ``results_path`` as a string.

    An image that fails to load gets a ``RuntimeWarning`` naming it, writes no rows and no drawing,
    and the loop goes on. Any other error stops the loop; rows of finished images stay on disk.
    """
    if merge_fn is None:
        merge_fn = merge_detections
    results_path = os.fspath(results_path)
    pool, in_flight = _merge_pool(merge_processes)  # validates first; workers start on first use
    if save_dir is not None:
        save_dir = create_folder(save_dir)
    has_ground_truth = bool(getattr(generator, "has_ground_truth", False))

    def finish(job: _ImageJob, writer: ResultsWriter) -> None:
        if job.future is None:
            merged = merge_fn(job.detections, job.shape, merger_config)
        else:
            merged = job.future.result()
        writer.write_image(job.image_id, merged)
        if save_dir is not None:
            annotations = generator.load_annotations(job.index) if has_ground_truth else None  # B7
            drawing = draw_image(
                job.image,
                merged,
                annotations=annotations,
                label_to_name=getattr(generator, "label_to_name", None),
                draw_threshold=draw_threshold,
                captions=captions,
            )
            out_path = os.path.join(save_dir, f"{job.index}.png")
            if not cv2.imwrite(out_path, drawing):
                raise OSError(f"predict: could not write the drawing {out_path}")

    pending: deque[_ImageJob] = deque()  # submitted to the pool, not yet written (CSV order)
    total = generator.size()
    with (
        ResultsWriter(results_path) as writer,
        tqdm(total=total, disable=not progress, desc="predict", unit="img") as bar,
    ):

        def finish_oldest() -> None:
            finish(pending.popleft(), writer)
            bar.update(1)

        try:
            for index in range(total):
                path = _image_path(generator, index)
                image = _load_image_or_warn(generator, index, path)
                if image is None:
                    bar.update(1)
                    continue
                detections = detect_image(
                    image,
                    run_model,
                    hard_score_rate=hard_score_rate,
                    score_threshold=score_threshold,
                    max_detections=max_detections,
                    image_min_side=image_min_side,
                    image_max_side=image_max_side,
                )
                job = _ImageJob(
                    index=index,
                    image_id=image_id_for(path),
                    image=image if save_dir is not None else None,
                    detections=detections,
                    shape=(int(image.shape[0]), int(image.shape[1])),
                )
                if pool is None:
                    finish(job, writer)
                    bar.update(1)
                    continue
                job.future = pool.submit(merge_fn, job.detections, job.shape, merger_config)
                pending.append(job)
                # At most `in_flight` merges beside the next network run; finish in CSV order.
                while len(pending) > in_flight:
                    finish_oldest()
            while pending:
                finish_oldest()
        except BaseException:
            # B18: a crash loses nothing already computed: write the merges still in flight first.
            try:
                while pending:
                    finish_oldest()
            except Exception:  # noqa: BLE001 -- the original error is the one to report
                pass
            raise
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
    return results_path


def _merge_pool(merge_processes: int | None) -> tuple[Executor | None, int]:
    """The executor for ``predict_images(merge_processes=...)`` and how many merges may pend."""
    if merge_processes is None:
        return None, 0
    workers = int(merge_processes)
    if workers < 0:
        raise ValueError(
            f"merge_processes must be None, 0 (a thread) or >= 1, got {merge_processes}"
        )
    if workers == 0:
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="em_merger"), 1
    context = multiprocessing.get_context("spawn")  # fork is unsafe once TensorFlow has threads
    return ProcessPoolExecutor(max_workers=workers, mp_context=context), workers


def _load_image_or_warn(generator: Any, index: int, path: str) -> np.ndarray | None:
    """``generator.load_image(index)``, or ``None`` after a ``RuntimeWarning`` naming the file."""
    try:
        return generator.load_image(index)
    except Exception as error:  # noqa: BLE001 -- any unreadable image is skipped, loudly (B25)
        warnings.warn(
            f"predict: could not load image {index} ({path}): {error}; skipped, no rows written "
            "for it",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
