"""The results CSV of ``predict``: its name, its writer and its reader (§11.1, §12.2; B18).

One row per merged detection, under the header ``image_id,x1,y1,x2,y2,confidence,hard_score``:
``image_id`` is ``"<parent folder>/<file name>"`` of the image (§9.1), the box is in original-image
pixels truncated to integers, the two scores are floats. ``predict`` writes the file image by image
(:class:`ResultsWriter`); ``evaluate`` reads it back (:func:`read_results_csv`), keyed by the bare
file name so that it joins the ground-truth CSV.

The reader's errors are :class:`~..errors.InputError`\\ s worded ``<file> line N: <problem>``.
NumPy and the standard library only.
"""

from __future__ import annotations

import csv
import math
import os
import re

import numpy as np

from object_detector_retinanet.keras_retinanet.config import CONFIDENCE, HARD_SCORE
from object_detector_retinanet.keras_retinanet.errors import InputError
from object_detector_retinanet.utils import safe_timestamp

RESULTS_HEADER = ("image_id", "x1", "y1", "x2", "y2", "confidence", "hard_score")  # §11.1
RESULTS_PREFIX = "detections_output_iou_"  # §11.1: kept, followed by "{rate}_{stamp}.csv"
SCORE_FIELDS = RESULTS_HEADER[5:]  # the columns evaluate can take the score from


# --------------------------------------------------------------------------------------------------
# Writing (§11.1, B18)
# --------------------------------------------------------------------------------------------------


def image_id_for(path: str | os.PathLike) -> str:
    """``"<parent folder>/<file name>"`` of an image path, e.g. ``images/test_0.jpg`` (§9.1).

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
# Reading (§11.1, §12.2)
# --------------------------------------------------------------------------------------------------


def read_results_csv(
    path: str | os.PathLike, score_field: str = "confidence"
) -> dict[str, np.ndarray]:
    """Read predict's results CSV into image file name → detections ``(N, 5)``.

    The header must name ``image_id, x1, y1, x2, y2`` and ``score_field`` (predict writes
    :data:`RESULTS_HEADER`); columns are found by name, so extra columns are allowed. ``image_id``
    is ``<folder>/<file>`` (e.g. ``images/test_0.jpg``): the folder is stripped so the key joins
    with the GT CSV's bare file names (§11.1, §12.2). Blank lines are skipped; images keep their
    order of first appearance.

    Args:
        path: the CSV file.
        score_field: which column becomes the score (column 4): ``confidence`` or ``hard_score``.

    Returns:
        File name → float64 ``(N, 5)`` ``(x1, y1, x2, y2, score)``.

    Raises:
        InputError (a ValueError): ``<file> line N: <problem>`` for a missing header column, a
            wrong column count, a non-numeric value (``malformed y1: 'two'``) or a non-finite one,
            an empty image id, x2 < x1 or y2 < y1, one file name reached from two different
            folders; ``<file>: not UTF-8 text`` for a binary file.
    """
    path = os.fspath(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        try:
            return _read_rows(path, reader, score_field)
        except csv.Error as error:
            raise InputError(f"{path} line {reader.line_num}: {error}") from None
        except UnicodeDecodeError:  # decoded by blocks: no line number to give
            raise InputError(f"{path}: not UTF-8 text; expected predict's results CSV") from None


def _read_rows(path: str, reader, score_field: str) -> dict[str, np.ndarray]:
    """The body of :func:`read_results_csv` over an open ``csv.reader``."""
    rows: dict[str, list[list[float]]] = {}
    image_ids: dict[str, str] = {}
    header = next(reader, None)
    if header is None:
        raise InputError(f"{path}: empty file; expected the header {','.join(RESULTS_HEADER)}")
    header = [column.strip() for column in header]
    required = (*RESULTS_HEADER[:5], score_field)
    missing = [column for column in required if column not in header]
    if missing:
        raise InputError(
            f"{path} line {reader.line_num}: header {','.join(header)!r} lacks column(s) "
            f"{', '.join(missing)}; expected {','.join(RESULTS_HEADER)}"
        )
    columns = [header.index(column) for column in required]
    for row in reader:
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise InputError(
                f"{path} line {line}: expected {len(header)} columns ({','.join(header)}), "
                f"found {len(row)}"
            )
        image_id = row[columns[0]].strip()
        if not image_id:
            raise InputError(f"{path} line {line}: empty image_id")
        values = []
        for name, index in zip(required[1:], columns[1:]):
            try:
                value = float(row[index])
            except ValueError:
                raise InputError(f"{path} line {line}: malformed {name}: {row[index]!r}") from None
            if not math.isfinite(value):
                raise InputError(f"{path} line {line}: column {name} is not finite: {value}")
            values.append(value)
        x1, y1, x2, y2, _ = values
        if x2 < x1 or y2 < y1:
            raise InputError(
                f"{path} line {line}: box ({x1}, {y1}, {x2}, {y2}) has x2 < x1 or y2 < y1"
            )
        # Strip the folder: 'images/test_0.jpg' → 'test_0.jpg' (also a Windows '\').
        file_name = image_id.replace("\\", "/").rsplit("/", 1)[-1]
        previous = image_ids.setdefault(file_name, image_id)
        if previous != image_id:
            raise InputError(
                f"{path} line {line}: image_id {image_id!r} and {previous!r} share the file "
                f"name {file_name!r}, so they cannot be told apart when joining with the GT"
            )
        rows.setdefault(file_name, []).append(values)
    return {
        name: np.asarray(values, dtype=np.float64).reshape(-1, 5) for name, values in rows.items()
    }
