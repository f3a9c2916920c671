"""The CSV-backed generator for SKU-110K data (§3, §8.3, §8.4).

The readers (:func:`read_classes`, :func:`parse_annotations`, :func:`list_images`) live in the
Keras-free :mod:`.csv_annotations` and are re-exported here.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from object_detector_retinanet.keras_retinanet.config import DEFAULT_CLASS_FILE
from object_detector_retinanet.keras_retinanet.errors import MissingInput
from object_detector_retinanet.keras_retinanet.preprocessing.csv_annotations import (  # noqa: F401
    _MAX_LISTED,
    FORMAT_MESSAGE,
    IMAGE_EXTENSIONS,
    list_images,
    parse_annotations,
    read_classes,
)
from object_detector_retinanet.keras_retinanet.preprocessing.generator import Generator
from object_detector_retinanet.keras_retinanet.utils.image import read_image_bgr, read_image_size
from object_detector_retinanet.utils import resolve_path


class CSVGenerator(Generator):
    """Generator over an SKU-110K annotation CSV, or over a folder of images for inference.

    Args:
        csv_data_file: annotation CSV; None lists the images found directly in ``base_dir``
            (sorted, no ground truth, ``has_ground_truth == False``).
        image_names: instead of a CSV, these images under ``base_dir``, in this order, without
            ground truth (missing ones are skipped as a CSV's are).
        csv_class_file: ``class_name,class_id`` map (default: ``bin/class_mappings.csv``).
        base_dir: image folder; None -> the CSV's folder. Relative paths are resolved once
            against the working directory (B4).
        targets_fn: see :class:`Generator`; None for inference.
        keep_missing: keep listed images that do not exist under ``base_dir`` (loading them then
            raises :class:`~..errors.UnreadableImage`: predict reports and counts them) instead of
            dropping them with one warning (training). Some image must exist either way.
        **generator_kwargs: the remaining :class:`Generator` arguments.

    Raises:
        FileNotFoundError: none of the CSV's images exists under ``base_dir`` (or the folder has
            no image in listing mode).
        ValueError: bad CSV rows (see :func:`parse_annotations`).
    """

    def __init__(
        self,
        csv_data_file: str | os.PathLike | None = None,
        csv_class_file: str | os.PathLike = DEFAULT_CLASS_FILE,
        base_dir: str | os.PathLike | None = None,
        targets_fn=None,
        image_names=None,
        keep_missing: bool = False,
        **generator_kwargs,
    ) -> None:
        self.keep_missing = keep_missing
        self.csv_data_file = resolve_path(csv_data_file)
        if image_names is not None and self.csv_data_file is not None:
            raise ValueError("CSVGenerator takes csv_data_file or image_names, not both")
        if base_dir is None:
            if self.csv_data_file is None:
                raise ValueError("CSVGenerator needs csv_data_file or base_dir")
            base_dir = os.path.dirname(self.csv_data_file)
        self.base_dir = resolve_path(base_dir)  # B4: resolved once, joined once

        self.classes = read_classes(csv_class_file)
        self.name_to_label = dict(self.classes)
        self.label_to_name = {label: name for name, label in self.classes.items()}

        if image_names is not None:
            self.has_ground_truth = False
            self.image_data = {}
            self.image_names = self._existing_images([os.fspath(n) for n in image_names])
        elif self.csv_data_file is None:
            self.has_ground_truth = False
            self.image_names = list_images(self.base_dir)
            if not self.image_names:
                raise MissingInput(f"no image files in base_dir {self.base_dir}")
            self.image_data = {}
        else:
            self.has_ground_truth = True
            self.image_data = parse_annotations(self.csv_data_file, self.classes)
            self.image_names = self._existing_images(list(self.image_data))
        self._sizes: dict[int, tuple[int, int]] = {}
        super().__init__(targets_fn=targets_fn, **generator_kwargs)

    def _existing_images(self, names: list[str]) -> list[str]:
        """Drop CSV images missing under base_dir with one warning (keep them with keep_missing);
        raise if none exists."""
        exists = [os.path.isfile(os.path.join(self.base_dir, name)) for name in names]
        present = [name for name, ok in zip(names, exists) if ok]
        missing = [name for name, ok in zip(names, exists) if not ok]
        csv_name = os.path.basename(self.csv_data_file) if self.csv_data_file else "the image list"
        if not present:
            if not names:
                raise MissingInput(f"{csv_name}: no image listed")
            raise MissingInput(
                f"none of the {len(names)} images listed in {csv_name} exists under base_dir "
                f"{self.base_dir} (first: {names[:_MAX_LISTED]})"
            )
        if missing and self.keep_missing:
            return names
        if missing:
            warnings.warn(
                f"{csv_name}: {len(missing)} of {len(names)} images do not exist under "
                f"{self.base_dir} and are skipped (Image file is not existing), first: "
                f"{missing[:_MAX_LISTED]}",
                stacklevel=3,
            )
        return present

    def size(self) -> int:
        return len(self.image_names)

    def num_classes(self) -> int:
        return max(self.classes.values()) + 1

    def image_path(self, image_index: int) -> str:
        return os.path.join(self.base_dir, self.image_names[image_index])

    def image_size(self, image_index: int) -> tuple[int, int]:
        """(width, height) from the file header, read once and cached (B5, B6)."""
        size = self._sizes.get(image_index)
        if size is None:
            try:
                size = read_image_size(self.image_path(image_index))
            except OSError as error:
                warnings.warn(f"{error}; assuming a square image for grouping", stacklevel=2)
                size = (1, 1)
            self._sizes[image_index] = size
        return size

    def image_aspect_ratio(self, image_index: int) -> float:
        width, height = self.image_size(image_index)
        return float(width) / float(height)  # B5: width / height, not inverted

    def load_image(self, image_index: int) -> np.ndarray:
        return read_image_bgr(self.image_path(image_index))

    def load_annotations(self, image_index: int) -> dict[str, np.ndarray]:
        data = self.image_data.get(self.image_names[image_index])
        if data is None:
            return {"bboxes": np.zeros((0, 4), np.float64), "labels": np.zeros(0, np.int64)}
        return {"bboxes": data["bboxes"].copy(), "labels": data["labels"].copy()}
