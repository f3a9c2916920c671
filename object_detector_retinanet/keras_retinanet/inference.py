"""Inference: from a weights file and images to the results CSV and drawings (§9-§11).

:class:`Predictor` is built from weights (:meth:`Predictor.from_weights`) or from any network
callable, and runs one short script per image (Goldman et al., CVPR 2019, §3-§4: Soft-IoU scores
feeding the EM-Merger):

1. load the original BGR image; caffe mean subtraction; resize to 800 / max 1333 (§9.2);
2. run the network on a batch of one (or of several images of equal input shape);
3. mix the scores: ``confidence = r * hard + (1 - r) * soft`` (§9.4);
4. rescale the boxes to original-image pixels (``boxes / scale``, §9.5);
5. keep ``hard > score_threshold`` (§9.6; this also drops the ``-1`` padding);
6. sort by confidence, descending, and keep the first ``max_detections`` (§9.7): the image's
   :class:`~.utils.raw_detections.RawDetections`, hard and soft scores apart;
7. merge the ``(N, 7)`` rows ``[x1, y1, x2, y2, confidence, hard_score, label]`` (§9.8), which are
   ``RawDetections.rows(r)``: the EM-Merger (§10) or, for the paper's "& NMS" baselines, plain
   IoU-NMS;
8. append the merged rows to the results CSV, flushed per image (§11.1, B18);
9. optionally draw ``{i}.png``: ground truth in green when there is any (B7), then the merged
   detections with confidence > 0.5 in red (§11.2).

Steps 1-7 of one image: :meth:`Predictor.predict_image`. All of them over a CSV generator:
:meth:`Predictor.run` (resumable, a shard of the images, raw detections saved on request) or
:meth:`Predictor.predict_generator`. Keras and TensorFlow are imported only to build the network
from weights; everything else takes the network as a callable. Every path is an explicit argument:
nothing here knows the data root (B1, B2, B3).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from object_detector_retinanet.keras_retinanet.config import (
    CONFIDENCE,
    HARD_SCORE,
    IOU_SUBSTRING,
    EmMergerConfig,
    PredictConfig,
    TrainConfig,
)
from object_detector_retinanet.keras_retinanet.errors import InputError, MissingInput
from object_detector_retinanet.keras_retinanet.postprocess.em_merger import merge_detections
from object_detector_retinanet.keras_retinanet.postprocess.nms import nms_merge
from object_detector_retinanet.keras_retinanet.utils.image import preprocess_image, resize_image
from object_detector_retinanet.keras_retinanet.utils.raw_detections import (
    RawDetections,
    merger_rows,
    save_raw,
)
from object_detector_retinanet.keras_retinanet.utils.results_csv import (
    ResultsWriter,
    image_id_for,
    resume_results,
)
from object_detector_retinanet.keras_retinanet.utils.visualization import (
    DETECTION_COLOR,
    GT_COLOR,
    box_thickness,
    draw_annotations,
    draw_detections,
)
from object_detector_retinanet.utils import create_folder

logger = logging.getLogger(__name__)

# run_model(batch (1, H, W, 3) float32)
#     -> (boxes (1, K, 4), hard (1, K), labels (1, K), soft (1, K, C)), arrays or tensors
RunModel = Callable[[np.ndarray], Sequence[Any]]
# merge(detections (N, 7), (height, width) of the original image, merger settings) -> (M, 7)
MergeFn = Callable[[np.ndarray, tuple[int, int], Any], np.ndarray]

MERGERS = ("em", "nms")  # the EM-Merger (§10) or the paper's "& NMS" baseline


# --------------------------------------------------------------------------------------------------
# The network (§4.3, §5.7)
# --------------------------------------------------------------------------------------------------


def load_inference_model(model_path, backbone, num_classes, score_threshold):
    """Build ResNet-FPN + heads (+ Soft-IoU head), load ``model_path`` by name, wrap for inference.

    Returns:
        ``(inference_model, has_soft_iou)``.

    Raises:
        InputError: ``model_path`` is not an HDF5 weights file.
    """
    from object_detector_retinanet.keras_retinanet.models.retinanet import (
        build_retinanet,
        retinanet_bbox,
    )
    from object_detector_retinanet.keras_retinanet.models.soft_iou import add_iou_head
    from object_detector_retinanet.keras_retinanet.models.weights import (
        has_layer_weights,
        load_weights_by_name,
    )

    try:
        has_soft_iou = has_layer_weights(model_path, IOU_SUBSTRING)
    except OSError as error:  # h5py: missing, empty or not HDF5
        raise InputError(f"{model_path}: not a readable weights file ({error})") from None
    base = build_retinanet(num_classes, backbone=backbone, freeze_bn=True)
    model = add_iou_head(base, num_classes) if has_soft_iou else base
    load_weights_by_name(model, model_path, skip_mismatch=False)
    if not has_soft_iou:
        logger.warning(
            "%s has no Soft-IoU head (a stage-1 model?): using the hard score as the soft score.",
            model_path,
        )
    return retinanet_bbox(model, nms=False, score_threshold=score_threshold), has_soft_iou


def make_runner(inference_model, has_soft_iou) -> RunModel:
    """A traced (never eager) function image batch -> (boxes, hard, labels, soft) NumPy arrays."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def forward(batch):
        return inference_model(batch, training=False)

    def run(batch):
        outputs = [o.numpy() for o in forward(tf.constant(batch))]
        boxes, hard, labels = outputs[:3]
        soft = outputs[3] if has_soft_iou else hard[..., None]
        return boxes, hard, labels, soft

    return run


def open_images(annotations, classes, base_dir, image_names=None):
    """The generator predict reads: ``annotations`` in CSV order (no shuffling, no grouping, so no
    image header is read ahead), ``image_names`` under ``base_dir`` in their order (no ground
    truth), or every image of ``base_dir`` when both are None (B7).

    Raises:
        InputError: a bad annotation or class-map row; MissingInput: no image to read.
    """
    from object_detector_retinanet.keras_retinanet.preprocessing.csv_generator import CSVGenerator

    return CSVGenerator(
        annotations,
        csv_class_file=classes,
        base_dir=base_dir,
        image_names=image_names,
        shuffle_groups=False,
        group_method="none",
        keep_missing=True,  # a missing image is reported and counted as skipped, like a corrupt one
    )


def shard_indices(count: int, shard: int, shards: int) -> range:
    """The images of shard ``shard`` (1-based) of ``shards``: a contiguous block of the list.

    Blocks differ in length by at most one and follow each other, so the shards' results CSVs
    concatenated in shard order hold the rows of the unsharded run in its order.
    """
    if not 1 <= shard <= shards:
        raise ValueError(f"shard must be within [1, {shards}], got {shard}")
    return range(count * (shard - 1) // shards, count * shard // shards)


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


def select_detections(
    boxes: np.ndarray,
    hard: np.ndarray,
    soft: np.ndarray | None,
    labels: np.ndarray,
    scale: float,
    score_threshold: float = PredictConfig.score_threshold,
    hard_score_rate: float = PredictConfig.hard_score_rate,
    max_detections: int = PredictConfig.max_detections,
    image_name: str = "",
    image_shape: tuple[int, int] = (0, 0),
) -> RawDetections:
    """One image's network outputs → the detections the merger takes, scores apart (§9.3-§9.7).

    Args:
        boxes: ``(K, 4)`` boxes ``(x1, y1, x2, y2)`` in pixels of the *resized* network input.
        hard: ``(K,)`` hard scores; ``-1`` marks padding rows.
        soft: ``(K,)`` or ``(K, 1)`` soft (predicted IoU) scores; ``None`` for a model without a
            Soft-IoU head: the confidence is then the hard score.
        labels: ``(K,)`` class labels.
        scale: The resize factor applied to the image (``resized = original * scale``).
        score_threshold: Keep rows with ``hard > score_threshold`` (strictly).
        hard_score_rate: ``r`` of :func:`mix_scores`.
        max_detections: Keep at most this many rows, the most confident first.
        image_name, image_shape: Stored in the result.

    Returns:
        The kept rows, most confident first (stable: ties keep the network's order), boxes in
        original-image pixels, scores in the network's dtype; ``merger_rows(result, r)`` are the
        merger's ``(N, 7)`` rows, in this order. Degenerate boxes (``x2 <= x1`` or ``y2 <= y1``)
        are dropped.

    Raises:
        ValueError: If ``soft`` has more than one class column (B24), or if the shapes disagree.
    """
    boxes = np.asarray(boxes)
    hard = np.asarray(hard)
    labels = np.asarray(labels)
    if soft is not None:
        soft = np.asarray(soft)
        if soft.ndim == 2:
            if soft.shape[1] != 1:
                # B24: the original squeezed axis -1 and crashed for C > 1 (issue #16).
                raise ValueError(
                    f"raw_detections: the soft (IoU) scores have {soft.shape[1]} class columns, "
                    f"shape {soft.shape}; SKU-110K inference requires a single-class model "
                    "(num_classes == 1)"
                )
            soft = soft[:, 0]
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"raw_detections: boxes must be (K, 4), got shape {boxes.shape}")
    num = boxes.shape[0]
    arrays = (("hard", hard), ("labels", labels)) + ((("soft", soft),) if soft is not None else ())
    for name, array in arrays:
        if array.shape != (num,):
            raise ValueError(
                f"raw_detections: {name} must have shape ({num},) to match boxes {boxes.shape}, "
                f"got {array.shape}"
            )

    # QUIRK (§9.4): the scores mix in the network's dtype (float32), as the original; the
    # result keeps that dtype, so RawDetections.rows() re-mixes them to the same rows.
    confidence = hard if soft is None else mix_scores(hard, soft, hard_score_rate)
    boxes = boxes / float(scale)

    # strict '>' also drops the -1 padding. Deviation: boxes with x2 <= x1 or y2 <= y1 (an
    # untrained or diverged regression head can produce them; clipping to the input can collapse
    # them) are dropped here: they cannot be objects, and the merger rejects them.
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    keep = np.flatnonzero((hard > score_threshold) & valid)
    order = keep[np.argsort(-confidence[keep], kind="stable")][: int(max_detections)]
    return RawDetections(
        image_name=image_name,
        image_shape=(int(image_shape[0]), int(image_shape[1])),
        boxes=boxes[order].astype(np.float64),
        hard=hard[order],
        soft=None if soft is None else soft[order],
        labels=labels[order].astype(np.int64),
    )


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

    Args: see :func:`select_detections`.

    Returns:
        ``(N, 7)`` float64 rows ``[x1, y1, x2, y2, confidence, hard_score, label]``, boxes in
        original-image pixels (floats), sorted by confidence descending (stable: ties keep the
        network's order). Degenerate boxes (``x2 <= x1`` or ``y2 <= y1``) are dropped.

    Raises:
        ValueError: If ``soft`` has more than one class column (B24), or if the shapes disagree.
    """
    raw = select_detections(
        boxes,
        hard,
        soft,
        labels,
        scale,
        score_threshold=score_threshold,
        hard_score_rate=hard_score_rate,
        max_detections=max_detections,
    )
    return merger_rows(raw, hard_score_rate)


def network_input(
    image: np.ndarray,
    image_min_side: int = TrainConfig.image_min_side,
    image_max_side: int = TrainConfig.image_max_side,
) -> tuple[np.ndarray, float]:
    """``(float32 (H', W', 3) network input, scale)`` of an original BGR image (§9.2)."""
    network_input, scale = resize_image(  # caffe mean subtraction first, then resize (§9.2)
        preprocess_image(image), min_side=image_min_side, max_side=image_max_side
    )
    return np.asarray(network_input, dtype=np.float32), scale


def run_network(run_model: RunModel, inputs: Sequence[np.ndarray]) -> list[tuple[np.ndarray, ...]]:
    """Run the network once on equal-shape ``inputs``; ``(boxes, hard, labels, soft)`` per input."""
    outputs = run_model(np.stack(inputs))
    if len(outputs) != 4:
        raise ValueError(
            f"run_model must return (boxes, hard_scores, labels, soft_scores), got {len(outputs)} "
            "outputs"
        )
    boxes, hard, labels, soft = (np.asarray(output) for output in outputs)
    return [(boxes[i], hard[i], labels[i], soft[i]) for i in range(len(inputs))]


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
    predictor = Predictor(
        run_model,
        hard_score_rate=hard_score_rate,
        score_threshold=score_threshold,
        max_detections=max_detections,
        image_min_side=image_min_side,
        image_max_side=image_max_side,
    )
    return predictor.detect(image)


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
# The predictor (§9-§11)
# --------------------------------------------------------------------------------------------------


@dataclass
class _ImageJob:
    """One image between the network and the CSV: what finishing it needs."""

    index: int
    image_id: str
    image: np.ndarray | None  # kept only when drawing
    detections: np.ndarray  # (N, 7) pre-merger rows
    shape: tuple[int, int]  # (height, width) of the original image
    future: Future | None = None  # the merge, when it runs beside the network
    name: str = ""  # the image's name in the generator (drawings named after it)


@dataclass
class PredictReport:
    """What :meth:`Predictor.run` did.

    Attributes:
        results_path: The results CSV.
        images: Images of the run's list (its shard).
        resumed: Of those, already finished in the results CSV (``resume=True``): skipped.
        predicted: Images predicted and written by this run.
        skipped: ``(image name, reason)`` of every image that could not be read (B25).
    """

    results_path: str
    images: int = 0
    resumed: int = 0
    predicted: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Predictor:
    """A network and the settings that turn its outputs into merged detections, CSV rows and
    drawings.

    Attributes:
        run_model: The network as a callable, see :func:`detect_image`
            (:meth:`from_weights` builds it from a weights file).
        hard_score_rate, score_threshold, max_detections: See :func:`raw_detections`.
        image_min_side, image_max_side: Inference resize.
        merger_config: EM-Merger settings; ``None`` = the paper's (§10.1).
        merge_fn: ``merge_fn(detections, (height, width), merger_config)``, the post-processor:
            ``None`` = the EM-Merger (:func:`merge_detections`), or e.g. :func:`nms_merge` for the
            paper's NMS baselines.
        draw_threshold: Drawn detections need ``confidence > draw_threshold`` (§11.2: 0.5).
        captions: Write the original's captions on the drawings (see :func:`draw_image`).
        has_soft_iou: Whether ``run_model``'s fourth output is a Soft-IoU score; without one the
            confidence is the hard score and raw detections are saved without a soft score.
    """

    run_model: RunModel = field(repr=False)
    hard_score_rate: float = PredictConfig.hard_score_rate
    score_threshold: float = PredictConfig.score_threshold
    max_detections: int = PredictConfig.max_detections
    image_min_side: int = TrainConfig.image_min_side
    image_max_side: int = TrainConfig.image_max_side
    merger_config: EmMergerConfig | None = None
    merge_fn: MergeFn | None = None
    draw_threshold: float = PredictConfig.draw_threshold
    captions: bool = False
    has_soft_iou: bool = True

    @classmethod
    def from_weights(
        cls,
        model_path: str | os.PathLike,
        backbone: str = "resnet50",
        num_classes: int = 1,
        merger: str = "em",
        selection: str = "original",
        **settings: Any,
    ) -> Predictor:
        """Build the inference network from a weights file and the merger it feeds.

        Args:
            model_path: A stage-2 snapshot, a stage-1 snapshot (no Soft-IoU head: the hard score
                stands in for the soft one) or an original Keras-2 ``.h5``, loaded by layer name.
            backbone: The ResNet the weights belong to.
            num_classes: Classes of the heads (1 for SKU-110K, B24).
            merger: ``"em"``, the EM-Merger with ``selection`` and the confidence mix's ``r``;
                or ``"nms"``, plain IoU-NMS at 0.5.
            selection: How the EM-Merger picks one detection per object
                (:data:`~..config.SELECTIONS`).
            **settings: The other fields of :class:`Predictor` (``hard_score_rate``,
                ``score_threshold``, ``max_detections``, image sides, drawing).

        Raises:
            MissingInput: ``model_path`` is not a file; InputError: it is not a weights file.
        """
        if merger not in MERGERS:
            raise ValueError(f"merger must be one of {MERGERS}, got {merger!r}")
        model_path = os.fspath(model_path)
        if not os.path.isfile(model_path):
            raise MissingInput(f"{model_path}: no such weights file")
        score_threshold = settings.pop("score_threshold", PredictConfig.score_threshold)
        model, has_soft_iou = load_inference_model(
            model_path, backbone, num_classes, score_threshold
        )
        if merger == "em":
            from object_detector_retinanet.keras_retinanet.postprocess.mog import warm_up

            warm_up()  # pay numba's one-off start-up (~0.1 s) now, not inside the first merge
            rate = settings.get("hard_score_rate", PredictConfig.hard_score_rate)
            settings["merger_config"] = EmMergerConfig(selection=selection, hard_score_rate=rate)
        else:
            settings["merge_fn"] = nms_merge
        return cls(
            make_runner(model, has_soft_iou),
            score_threshold=score_threshold,
            has_soft_iou=has_soft_iou,
            **settings,
        )

    def detect(self, image: np.ndarray) -> np.ndarray:
        """The pre-merger ``(N, 7)`` rows of one original BGR image (§9.2-§9.8)."""
        return self.rows(self.detect_raw([image])[0])

    def detect_raw(
        self,
        images: Sequence[np.ndarray],
        names: Sequence[str] | None = None,
        batch_size: int | None = None,
    ) -> list[RawDetections]:
        """The raw detections of original BGR images (§9.2-§9.7), in their order.

        Images whose network inputs have the same shape run through the network together, at most
        ``batch_size`` at a time (default: all of them); the others in smaller batches.

        Args:
            images: ``uint8 (H, W, 3)`` BGR images.
            names: Their names, stored in the results (default ``""``).
            batch_size: The most images the network takes at once.
        """
        inputs = [
            network_input(image, self.image_min_side, self.image_max_side) for image in images
        ]
        limit = max(1, len(images) if batch_size is None else int(batch_size))
        groups: dict[tuple[int, ...], list[int]] = {}
        for position, (batch, _) in enumerate(inputs):
            groups.setdefault(batch.shape, []).append(position)
        outputs: list[Any] = [None] * len(images)
        for positions in groups.values():
            for start in range(0, len(positions), limit):
                chunk = positions[start : start + limit]
                for position, output in zip(
                    chunk, run_network(self.run_model, [inputs[p][0] for p in chunk])
                ):
                    outputs[position] = output
        raws = []
        for position, (boxes, hard, labels, soft) in enumerate(outputs):
            raws.append(
                select_detections(
                    boxes,
                    hard,
                    soft if self.has_soft_iou else None,
                    labels,
                    inputs[position][1],
                    score_threshold=self.score_threshold,
                    hard_score_rate=self.hard_score_rate,
                    max_detections=self.max_detections,
                    image_name="" if names is None else names[position],
                    image_shape=_height_width(images[position]),
                )
            )
        return raws

    def rows(self, raw: RawDetections) -> np.ndarray:
        """The merger's ``(N, 7)`` rows of raw detections (§9.8): ``raw.rows(hard_score_rate)``."""
        return merger_rows(raw, self.hard_score_rate)

    def merge(self, detections: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """One detection per object out of an image's pre-merger rows (§9.9, §10)."""
        merge = merge_detections if self.merge_fn is None else self.merge_fn
        return merge(detections, shape, self.merger_config)

    def predict_image(self, image: np.ndarray) -> np.ndarray:
        """The merged ``(M, 7)`` rows of one ``uint8 (H, W, 3)`` BGR image, in its pixels."""
        return self.merge(self.detect(image), _height_width(image))

    def predict_generator(self, generator: Any, results_path: str | os.PathLike, *args, **kwargs):
        """:meth:`run` (same arguments); returns ``results_path`` as a string."""
        return self.run(generator, results_path, *args, **kwargs).results_path

    def run(
        self,
        generator: Any,
        results_path: str | os.PathLike,
        save_dir: str | os.PathLike | None = None,
        progress: bool = True,
        overlap: bool = False,
        *,
        indices: Sequence[int] | None = None,
        resume: bool = False,
        raw_dir: str | os.PathLike | None = None,
        batch_size: int = 1,
        name_by_image: bool = False,
    ) -> PredictReport:
        """Predict the images of ``generator``, merge, write the results CSV and the drawings.

        Args:
            generator: A CSV generator (``size()``, ``load_image(i)`` → ``uint8`` BGR,
                ``image_path(i)``, ``has_ground_truth``, ``load_annotations(i)``,
                ``label_to_name``), read in its CSV order (see :func:`open_images`).
            results_path: The CSV to write (see :func:`~.utils.results_csv.results_filename`); its
                folder is created. Its sidecar ``<results_path>.done`` lists the finished images.
            save_dir: When given, ``save_dir/{i}.png`` is drawn for every image loaded (``i`` =
                0-based CSV position, §11.2); the folder is created.
            progress: Show a tqdm progress bar.
            overlap: Merge image ``i`` in one background thread while the network runs on image
                ``i + 1`` (the network releases the GIL); ``False`` merges right after the network
                (the original's order). Rows are written in CSV order and equal either way (the
                merger is deterministic, its budgets count work, not time).
            indices: The generator's images to predict, in this order (e.g. a
                :func:`shard_indices`); default all.
            resume: Continue ``results_path`` (:func:`~.utils.results_csv.resume_results`): its
                finished images are skipped, new rows appended.
            raw_dir: Save every image's raw detections there
                (:func:`~.utils.raw_detections.save_raw`): the rows the merger gets.
            batch_size: Images the network takes at once (equal input shapes only); its outputs
                agree with a batch of one's to float rounding (kernels depend on the batch size).
            name_by_image: Name the drawings after the images (``shelf_1.png`` for
                ``shelf_1.jpg``) instead of ``{i}.png``.

        Returns:
            A :class:`PredictReport`.

        An image that fails to load gets a ``RuntimeWarning`` naming it, writes no rows and no
        drawing, is listed in the report, and the loop goes on (B25). Any other error stops the
        loop; rows of finished images stay on disk (B18).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        results_path = os.fspath(results_path)
        done = set(resume_results(results_path)) if resume else set()
        order = range(generator.size()) if indices is None else indices
        todo = []
        for index in order:
            path = _image_path(generator, index)
            if image_id_for(path) not in done:
                todo.append((index, path))
        report = PredictReport(results_path, images=len(order), resumed=len(order) - len(todo))
        if save_dir is not None:
            save_dir = create_folder(save_dir)
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="merger") if overlap else None
        pending: deque[_ImageJob] = deque()  # merging beside the network, not yet written
        with (
            ResultsWriter(results_path, append=resume) as writer,
            tqdm(total=len(todo), disable=not progress, desc="predict", unit="img") as bar,
        ):

            def finish(job: _ImageJob) -> None:
                if job.future is None:
                    merged = self.merge(job.detections, job.shape)
                else:
                    merged = job.future.result()
                writer.write_image(job.image_id, merged)
                if save_dir is not None:
                    self._draw(generator, job, merged, save_dir, name_by_image)
                report.predicted += 1
                bar.update(1)

            try:
                for start in range(0, len(todo), batch_size):
                    loaded = []
                    for index, path in todo[start : start + batch_size]:
                        name = _image_name(generator, index, path)
                        image = _load_image_or_warn(generator, index, path, report.skipped, name)
                        if image is None:
                            bar.update(1)
                        else:
                            loaded.append((index, path, name, image))
                    raws = self.detect_raw(
                        [image for *_, image in loaded], [name for _, _, name, _ in loaded]
                    )
                    for (index, path, name, image), raw in zip(loaded, raws):
                        if raw_dir is not None:
                            save_raw(raw_dir, raw)
                        job = _ImageJob(
                            index=index,
                            image_id=image_id_for(path),
                            image=image if save_dir is not None else None,
                            detections=self.rows(raw),
                            shape=raw.image_shape,
                            name=name,
                        )
                        if pool is None:
                            finish(job)
                            continue
                        job.future = pool.submit(self.merge, job.detections, job.shape)
                        pending.append(job)
                    # The merges of one batch beside the next network run; finish in CSV order.
                    while len(pending) > len(loaded):
                        finish(pending.popleft())
                while pending:
                    finish(pending.popleft())
            except BaseException:
                # B18: a crash loses nothing already computed: write the merge still in flight.
                try:
                    while pending:
                        finish(pending.popleft())
                except Exception:  # noqa: BLE001 -- the original error is the one to report
                    pass
                raise
            finally:
                if pool is not None:
                    pool.shutdown(wait=True, cancel_futures=True)
        return report

    def _draw(
        self,
        generator: Any,
        job: _ImageJob,
        merged: np.ndarray,
        save_dir: str,
        name_by_image: bool = False,
    ) -> None:
        """Write ``save_dir/{index}.png`` (§11.2), or ``save_dir/<image name>.png`` with
        ``name_by_image``; ground truth only when the CSV has it (B7)."""
        has_ground_truth = bool(getattr(generator, "has_ground_truth", False))
        drawing = draw_image(
            job.image,
            merged,
            annotations=generator.load_annotations(job.index) if has_ground_truth else None,
            label_to_name=getattr(generator, "label_to_name", None),
            draw_threshold=self.draw_threshold,
            captions=self.captions,
        )
        stem = os.path.splitext(os.path.basename(job.name))[0] if name_by_image else job.index
        out_path = os.path.join(save_dir, f"{stem}.png")
        if not cv2.imwrite(out_path, drawing):
            raise OSError(f"predict: could not write the drawing {out_path}")


def predict_images(
    generator: Any,
    run_model: RunModel,
    results_path: str | os.PathLike,
    save_dir: str | os.PathLike | None = None,
    progress: bool = True,
    overlap: bool = False,
    **settings: Any,
) -> str:
    """:meth:`Predictor.predict_generator` of ``Predictor(run_model, **settings)``."""
    return Predictor(run_model, **settings).predict_generator(
        generator, results_path, save_dir=save_dir, progress=progress, overlap=overlap
    )


def _height_width(image: np.ndarray) -> tuple[int, int]:
    """``(height, width)`` of an image as the merger takes it (B2: never a path to re-read)."""
    return int(image.shape[0]), int(image.shape[1])


def _image_path(generator: Any, index: int) -> str:
    """The generator's path for image ``index`` (falls back to its name)."""
    if hasattr(generator, "image_path"):
        return os.fspath(generator.image_path(index))
    return os.fspath(generator.image_names[index])


def _image_name(generator: Any, index: int, path: str) -> str:
    """The name of image ``index`` as the generator lists it (the file name by default)."""
    names = getattr(generator, "image_names", None)
    return os.fspath(names[index]) if names is not None else os.path.basename(path)


def _load_image_or_warn(
    generator: Any,
    index: int,
    path: str,
    skipped: list[tuple[str, str]] | None = None,
    name: str | None = None,
) -> np.ndarray | None:
    """``generator.load_image(index)``, or ``None`` after a ``RuntimeWarning`` naming the file and
    an entry ``(name, reason)`` in ``skipped``."""
    try:
        return generator.load_image(index)
    except Exception as error:  # noqa: BLE001 -- any unreadable image is skipped, loudly (B25)
        warnings.warn(
            f"predict: could not load image {index} ({path}): {error}; skipped, no rows written "
            "for it",
            RuntimeWarning,
            stacklevel=3,
        )
        if skipped is not None:
            reason = error.__cause__ if error.__cause__ is not None else error
            skipped.append((name or os.path.basename(path), str(reason)))
        return None
