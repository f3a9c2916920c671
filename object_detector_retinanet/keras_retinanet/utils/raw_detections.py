"""Raw detections on disk: one image's network output before merging, one compressed file each.

``predict.py --save-raw DIR`` writes, for every image, the rows it hands to the merger (after the
hard-score threshold and the cap, §9.6-§9.7) with both scores kept apart, so that the merger and
the score mix can be changed afterwards without running the network again (the paper's ablation
table). A file is ``DIR/<image file name>.npz`` (``np.savez_compressed``) holding:

- ``image_name``: the image's file name, as in the annotation CSV;
- ``image_shape``: ``(height, width)`` of the original image;
- ``boxes``: ``(N, 4)`` float64 ``(x1, y1, x2, y2)`` in original-image pixels;
- ``hard``: ``(N,)`` objectness ("hard" score), in the network's dtype (float32);
- ``has_soft``: whether the model has a Soft-IoU head;
- ``soft``: ``(N,)`` Soft-IoU ("soft" score), same dtype; empty without the head;
- ``labels``: ``(N,)`` int64 class labels.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from object_detector_retinanet.keras_retinanet.config import (
    CONFIDENCE,
    HARD_SCORE,
    LABEL,
    X1,
    Y2,
)
from object_detector_retinanet.keras_retinanet.errors import InputError, MissingInput

SUFFIX = ".npz"
_KEYS = ("image_name", "image_shape", "boxes", "hard", "has_soft", "soft", "labels")


@dataclass(frozen=True)
class RawDetections:
    """One image's raw detections; see the module docstring for the fields."""

    image_name: str
    image_shape: tuple[int, int]
    boxes: np.ndarray
    hard: np.ndarray
    soft: np.ndarray | None
    labels: np.ndarray

    def __post_init__(self):
        n = len(self.boxes)
        if np.shape(self.boxes) != (n, 4):
            raise ValueError(f"{self.image_name}: boxes must be (N, 4), got {np.shape(self.boxes)}")
        for name in ("hard", "labels") + (("soft",) if self.soft is not None else ()):
            if np.shape(getattr(self, name)) != (n,):
                raise ValueError(f"{self.image_name}: {name} must have shape ({n},)")

    @property
    def has_soft(self) -> bool:
        return self.soft is not None

    def rows(self, hard_score_rate: float) -> np.ndarray:
        """The merger's ``(N, 7)`` rows with ``confidence = r·hard + (1 − r)·soft`` (§9.4).

        Sorted by confidence, most confident first (stable). The scores are mixed in their own
        dtype with ``r`` as a Python float, so the network's float32 scores mix in float32 as in
        the original (QUIRK, §9.4) and saved detections give the very rows predict merged.
        Without a soft score only ``r = 1`` (the hard score alone) is defined.
        """
        rate = float(hard_score_rate)
        if self.soft is None:
            if rate != 1.0:
                raise ValueError(f"{self.image_name}: no soft score saved; only r = 1 is defined")
            confidence = np.asarray(self.hard)
        else:
            confidence = rate * self.hard + (1.0 - rate) * self.soft
        order = np.argsort(-confidence, kind="stable")
        rows = np.empty((order.size, 7), dtype=np.float64)
        rows[:, X1 : Y2 + 1] = self.boxes[order]
        rows[:, CONFIDENCE] = confidence[order]
        rows[:, HARD_SCORE] = self.hard[order]
        rows[:, LABEL] = self.labels[order]
        return rows


def merger_rows(raw: RawDetections, hard_score_rate: float) -> np.ndarray:
    """The merger's ``(N, 7)`` rows of ``raw`` at ``r``; without a soft score, confidence = hard."""
    return raw.rows(hard_score_rate if raw.has_soft else 1.0)


def raw_path(raw_dir: str | os.PathLike, image_name: str) -> str:
    """``raw_dir/<file name of image_name>.npz``."""
    return os.path.join(os.fspath(raw_dir), os.path.basename(image_name) + SUFFIX)


def save_raw(raw_dir: str | os.PathLike, raw: RawDetections) -> str:
    """Write one image's file (complete or not at all: a temporary file renamed into place)."""
    path = raw_path(raw_dir, raw.image_name)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temporary = path + ".part"
    with open(temporary, "wb") as handle:
        np.savez_compressed(
            handle,
            image_name=np.array(raw.image_name),
            image_shape=np.asarray(raw.image_shape, dtype=np.int64),
            boxes=np.asarray(raw.boxes, dtype=np.float64).reshape(-1, 4),
            hard=np.asarray(raw.hard),  # the scores keep their dtype: see rows()
            has_soft=np.array(raw.soft is not None),
            soft=np.zeros(0, np.asarray(raw.hard).dtype) if raw.soft is None else raw.soft,
            labels=np.asarray(raw.labels, dtype=np.int64),
        )
    os.replace(temporary, path)
    return path


def load_raw(path: str | os.PathLike) -> RawDetections:
    """Read one file written by :func:`save_raw`.

    Raises:
        InputError: the file is not such a file (truncated, another format, missing fields).
    """
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in _KEYS if key not in data.files]
            if missing:
                raise InputError(f"{path}: not a raw-detections file (missing {missing})")
            fields = {key: data[key] for key in _KEYS}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        if isinstance(error, InputError):
            raise
        raise InputError(f"{path}: cannot read raw detections: {error}") from None
    try:
        return RawDetections(
            image_name=str(fields["image_name"]),
            image_shape=tuple(int(v) for v in fields["image_shape"]),
            boxes=fields["boxes"].reshape(-1, 4),
            hard=fields["hard"],
            soft=fields["soft"] if bool(fields["has_soft"]) else None,
            labels=fields["labels"],
        )
    except ValueError as error:
        raise InputError(f"{path}: {error}") from None


def iter_raw(raw_dir: str | os.PathLike) -> Iterator[RawDetections]:
    """Every raw-detections file of a folder, in order of file name.

    Raises:
        MissingInput: the folder does not exist or holds no ``.npz`` file.
    """
    raw_dir = os.fspath(raw_dir)
    if not os.path.isdir(raw_dir):
        raise MissingInput(f"raw-detections folder not found: {raw_dir}")
    names = sorted(name for name in os.listdir(raw_dir) if name.endswith(SUFFIX))
    if not names:
        raise MissingInput(f"{raw_dir}: no raw-detections files (*{SUFFIX})")
    for name in names:
        yield load_raw(os.path.join(raw_dir, name))
