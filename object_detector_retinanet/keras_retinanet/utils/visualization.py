"""OpenCV drawing of boxes and captions on BGR images (§11.2).

Owns *how* things are drawn; callers (``inference.py``) decide *what* is drawn. The style is
the original's (inherited from fizyr/keras-retinanet):

- boxes: thickness 2, anti-aliased (``cv2.LINE_AA``); 1 px and crisp on images under 512 px
  (:func:`box_thickness`);
- captions at ``(x1, y1 - 10)`` in ``FONT_HERSHEY_PLAIN`` scale 1, drawn black with thickness 2 and
  then white with thickness 1 on top, so they stay readable on any background;
- ground truth in green ``(0, 255, 0)`` captioned with the class name, detections in red
  ``(0, 0, 255)`` captioned ``"<hard_score:.2f>: <confidence:.2f>"`` when their confidence exceeds
  0.5.

All functions draw in place on a ``uint8 (H, W, 3)`` BGR image and return ``None``. Coordinates are
truncated to integers (``astype(int)``), as the original did.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import cv2
import numpy as np

from object_detector_retinanet.keras_retinanet.config import PredictConfig

GT_COLOR = (0, 255, 0)  # §11.2: ground truth in green (BGR)
DETECTION_COLOR = (0, 0, 255)  # §11.2: merged detections in red (BGR)
BOX_THICKNESS = 2  # §11.2
CAPTION_OFFSET = 10  # §11.2: caption baseline 10 px above the box's top edge
CAPTION_FONT = cv2.FONT_HERSHEY_PLAIN
CAPTION_SCALE = 1
DRAW_THRESHOLD = PredictConfig.draw_threshold  # §11.2: only confidence > 0.5 is drawn
THIN_BELOW = 512  # images with a shorter side below this get 1 px boxes (see box_thickness)


def box_thickness(image_shape: tuple[int, ...]) -> int:
    """Line width that keeps small images readable: 1 px when the shorter side is under 512 px
    (a 256x256 shelf holds ~30 products of ~30 px, which 2 px outlines of two colours would bury),
    else the original's 2 px."""
    return 1 if min(image_shape[:2]) < THIN_BELOW else BOX_THICKNESS


def _corners(box: Any) -> tuple[int, int, int, int]:
    """``(x1, y1, x2, y2)`` as Python ints, truncated toward zero (OpenCV wants plain ints)."""
    b = np.asarray(box, dtype=np.float64).reshape(-1)[:4].astype(int)
    return int(b[0]), int(b[1]), int(b[2]), int(b[3])


def draw_box(
    image: np.ndarray,
    box: Any,
    color: tuple[int, int, int],
    thickness: int = BOX_THICKNESS,
) -> None:
    """Draw one rectangle.

    Args:
        image: ``uint8 (H, W, 3)`` BGR image, modified in place.
        box: ``(x1, y1, x2, y2)`` in pixels (extra trailing values are ignored).
        color: BGR colour.
        thickness: Line thickness in pixels.
    """
    x1, y1, x2, y2 = _corners(box)
    # Anti-aliasing smears a 1 px line over 3 rows at 60 % strength: draw thin lines crisp.
    line_type = cv2.LINE_AA if thickness > 1 else cv2.LINE_8
    cv2.rectangle(image, (x1, y1), (x2, y2), color, thickness, line_type)


def draw_caption(image: np.ndarray, box: Any, caption: str) -> None:
    """Write ``caption`` 10 px above the box's top-left corner, white on a black outline.

    Args:
        image: ``uint8 (H, W, 3)`` BGR image, modified in place.
        box: ``(x1, y1, x2, y2)`` in pixels; only ``x1`` and ``y1`` are used.
        caption: Text to write.
    """
    x1, y1, _, _ = _corners(box)
    origin = (x1, y1 - CAPTION_OFFSET)
    cv2.putText(image, caption, origin, CAPTION_FONT, CAPTION_SCALE, (0, 0, 0), 2)
    cv2.putText(image, caption, origin, CAPTION_FONT, CAPTION_SCALE, (255, 255, 255), 1)


def draw_boxes(
    image: np.ndarray,
    boxes: np.ndarray,
    color: tuple[int, int, int],
    thickness: int = BOX_THICKNESS,
) -> None:
    """Draw every box of ``boxes (N, 4)`` in one colour, without captions."""
    for box in np.asarray(boxes).reshape(-1, 4):
        draw_box(image, box, color, thickness=thickness)


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    confidence: np.ndarray,
    hard: np.ndarray,
    threshold: float = DRAW_THRESHOLD,
    color: tuple[int, int, int] = DETECTION_COLOR,
    captions: bool = True,
    thickness: int = BOX_THICKNESS,
) -> None:
    """Draw the detections whose confidence is strictly above ``threshold``, with their scores.

    Args:
        image: ``uint8 (H, W, 3)`` BGR image, modified in place.
        boxes: ``(N, 4)`` boxes ``(x1, y1, x2, y2)`` in pixels of ``image``.
        confidence: ``(N,)`` combined scores ``r * hard + (1 - r) * soft``.
        hard: ``(N,)`` classification ("hard") scores.
        threshold: Draw only ``confidence > threshold`` (§11.2: 0.5).
        color: BGR colour of boxes (captions are always white on black).
        captions: Write ``"<hard>: <confidence>"`` above each box (the original did).
        thickness: Box line width in pixels.
    """
    boxes = np.asarray(boxes).reshape(-1, 4)
    confidence = np.asarray(confidence).reshape(-1)
    hard = np.asarray(hard).reshape(-1)
    if not len(boxes) == len(confidence) == len(hard):
        raise ValueError(
            f"draw_detections: {len(boxes)} boxes, {len(confidence)} confidences and {len(hard)} "
            "hard scores; expected the same number of each"
        )
    for box, conf, hard_score in zip(boxes, confidence, hard):
        if conf > threshold:
            draw_box(image, box, color, thickness=thickness)
            if captions:
                draw_caption(image, box, f"{hard_score:.2f}: {conf:.2f}")


def _label_name(label_to_name: Callable[[int], str] | Mapping[int, str] | None, label: int) -> str:
    """Class name of ``label`` from a callable (``generator.label_to_name``) or a mapping."""
    if label_to_name is None:
        return str(label)
    if isinstance(label_to_name, Mapping):
        return str(label_to_name[label])
    return str(label_to_name(label))


def draw_annotations(
    image: np.ndarray,
    annotations: Mapping[str, np.ndarray],
    label_to_name: Callable[[int], str] | Mapping[int, str] | None = None,
    color: tuple[int, int, int] = GT_COLOR,
    captions: bool = True,
    thickness: int = BOX_THICKNESS,
) -> None:
    """Draw ground-truth boxes captioned with their class name.

    Args:
        image: ``uint8 (H, W, 3)`` BGR image, modified in place.
        annotations: ``{"bboxes": (M, 4), "labels": (M,)}`` in pixels of ``image`` (``M`` may be 0).
        label_to_name: ``label -> name`` callable or mapping; ``None`` captions with the label
            number.
        color: BGR colour of boxes.
        captions: Write the class name above each box (the original did).
        thickness: Box line width in pixels.
    """
    bboxes = np.asarray(annotations["bboxes"]).reshape(-1, 4)
    labels = np.asarray(annotations["labels"]).reshape(-1)
    if len(bboxes) != len(labels):
        raise ValueError(
            f"draw_annotations: {len(bboxes)} boxes but {len(labels)} labels; "
            "expected one label each"
        )
    for box, label in zip(bboxes, labels):
        draw_box(image, box, color, thickness=thickness)
        if captions:
            draw_caption(image, box, _label_name(label_to_name, int(label)))
