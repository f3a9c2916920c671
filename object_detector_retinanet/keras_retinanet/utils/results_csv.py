"""The results CSV of ``predict``: its name, its writer and its reader (§11.1, §12.2; B18).

One row per merged detection, under the header ``image_id,x1,y1,x2,y2,confidence,hard_score``:
``image_id`` is ``"<parent folder>/<file name>"`` of the image (§9.1), the box is in original-image
pixels truncated to integers, the two scores are floats. ``predict`` writes the file image by image
(:class:`ResultsWriter`); ``evaluate`` reads it back (:func:`read_results_csv`), keyed by the bare
file name so that it joins the ground-truth CSV.

Beside the CSV, ``<results>.csv.done`` lists the ``image_id`` of every finished image, one a line,
appended after the image's rows are on disk; it also names the images without any detection, which
have no row. ``predict --resume`` reads both (:func:`resume_results`): finished images are skipped
and the rows of an image cut short by a crash are removed, so the image is predicted again.

The reader's errors are :class:`~..errors.InputError`\\ s worded ``<file> line N: <problem>``.
NumPy and the standard library only.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re

import numpy as np

from object_detector_retinanet.keras_retinanet.config import CONFIDENCE, HARD_SCORE
from object_detector_retinanet.keras_retinanet.errors import InputError, MissingInput
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


def image_key(image_id: str) -> str:
    """The key an image's rows join the ground truth by: the file name without its folder
    (``images/test_0.jpg`` -> ``test_0.jpg``; a Windows ``\\`` too)."""
    return image_id.replace("\\", "/").rsplit("/", 1)[-1]


def truncated_boxes(detections: np.ndarray) -> np.ndarray:
    """The boxes as the CSV holds them: integers truncated toward zero, as the original (§11.1)."""
    return np.asarray(detections)[:, :4].astype(np.int64)


def rows_as_read(detections: np.ndarray) -> np.ndarray:
    """``(N, 5)`` float64 ``[x1, y1, x2, y2, confidence]``: what :func:`read_results_csv` returns
    for rows :class:`ResultsWriter` wrote, without the round trip through a file."""
    detections = np.asarray(detections, dtype=np.float64)
    out = np.empty((len(detections), 5), dtype=np.float64)
    if not len(detections):
        return out
    out[:, :4] = truncated_boxes(detections)
    out[:, 4] = detections[:, CONFIDENCE]
    return out


def done_path(results_path: str | os.PathLike) -> str:
    """The sidecar of a results CSV: ``<results_path>.done``, one finished ``image_id`` a line."""
    return os.fspath(results_path) + ".done"


class ResultsWriter:
    """Writes the results CSV incrementally: header at open, each image's rows flushed (B18).

    The original collected every row and wrote the file at the very end, so a crash on image 2,000
    of 2,941 lost everything. Here the file on disk always holds every image finished so far: an
    image's rows go out in one write and one flush, then its ``image_id`` is appended to the
    sidecar :func:`done_path` (also for an image without detections).

    Usage::

        with ResultsWriter(path) as writer:
            writer.write_image("images/test_0.jpg", merged_rows)

    Args:
        path: The CSV path.
        append: Continue an existing file (after :func:`resume_results`) instead of starting a new
            one; the header is written only if the file is empty or absent.

    Attributes:
        path: The CSV path.
        rows_written: Detection rows written so far (header excluded).
        images_written: Calls to :meth:`write_image` so far.
    """

    def __init__(self, path: str | os.PathLike, append: bool = False) -> None:
        self.path = os.fspath(path)
        self.append = append
        self.rows_written = 0
        self.images_written = 0
        self._file = None
        self._done = None

    def open(self) -> ResultsWriter:
        """Create the file (and its folder) and write the header; returns ``self``."""
        folder = os.path.dirname(self.path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        mode = "a" if self.append else "w"
        self._file = open(self.path, mode, newline="", encoding="utf-8")
        self._done = open(done_path(self.path), mode, newline="", encoding="utf-8")
        if self._file.tell() == 0:
            self._file.write(_csv_text([RESULTS_HEADER]))
            self._file.flush()
        return self

    def write_image(self, image_id: str, detections: np.ndarray) -> None:
        """Append one image's detections and flush them to the OS, then mark the image done.

        Args:
            image_id: ``"<parent folder>/<file name>"`` (see :func:`image_id_for`).
            detections: ``(N, >= 6)`` rows ``[x1, y1, x2, y2, confidence, hard_score, ...]``;
                boxes are written truncated to integers (§11.1), extra columns are ignored.
                ``N`` may be 0.
        """
        if self._file is None:
            raise RuntimeError(
                f"ResultsWriter({self.path!r}) is not open; use it as a context manager"
            )
        if "\n" in image_id or "\r" in image_id:
            raise ValueError(f"write_image: image_id {image_id!r} contains a line break")
        detections = np.asarray(detections, dtype=np.float64)
        if detections.size == 0:
            detections = detections.reshape(0, 7)
        if detections.ndim != 2 or detections.shape[1] < 6:
            raise ValueError(
                f"write_image({image_id!r}): detections must be (N, >= 6) "
                "[x1, y1, x2, y2, confidence, hard_score, ...], "
                f"got shape {detections.shape}"
            )
        corners = truncated_boxes(detections)
        rows = [
            [image_id, *box, float(row[CONFIDENCE]), float(row[HARD_SCORE])]
            for box, row in zip(corners.tolist(), detections)
        ]
        if rows:  # one write: a crash never leaves part of an image's rows behind a flush
            self._file.write(_csv_text(rows))
            self._file.flush()
        self._done.write(image_id + "\n")
        self._done.flush()
        self.rows_written += len(detections)
        self.images_written += 1

    def close(self) -> None:
        """Close the files (idempotent)."""
        for handle in (self._file, self._done):
            if handle is not None:
                handle.close()
        self._file = None
        self._done = None

    def __enter__(self) -> ResultsWriter:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _csv_text(rows) -> str:
    """``rows`` as CSV text, the way :class:`csv.writer` writes them to a file."""
    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()


def resume_results(path: str | os.PathLike) -> list[str]:
    """Make an interrupted results CSV ready to be continued; returns its finished image ids.

    The finished images are those of the sidecar :func:`done_path` (a half-written last line
    dropped); without a sidecar, every image of the CSV but the last, whose rows may be cut short.
    The CSV is truncated after the last row of a finished image, which drops a half-written last
    line and the rows of an image that was being written; the sidecar is rewritten to match.

    Raises:
        MissingInput: no such file; InputError: the file does not start with the results header.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingInput(f"--resume: no such results file: {path}")
    with open(path, "rb") as handle:
        data = handle.read()
    sidecar = done_path(path)
    if not data:  # stopped before the header: start afresh
        open(sidecar, "w").close()
        return []
    lines = _complete_lines(data)
    header = _first_field_row(lines[0][0]) if lines else None
    if header != list(RESULTS_HEADER):
        raise InputError(
            f"{path}: not a results CSV of predict (the first line must be "
            f"{','.join(RESULTS_HEADER)})"
        )
    ids = [(_first_field_row(line)[0], end) for line, end in lines[1:]]
    if os.path.isfile(sidecar):
        with open(sidecar, "rb") as handle:
            done_lines = _complete_lines(handle.read())
        done = [line.decode("utf-8").rstrip("\r\n") for line, _ in done_lines]
        done = [image_id for image_id in done if image_id]
    else:
        in_csv = list(dict.fromkeys(image_id for image_id, _ in ids))
        done = in_csv[:-1]
    finished = set(done)
    keep = lines[0][1]
    for image_id, end in ids:
        if image_id in finished:
            keep = end
    os.truncate(path, keep)
    with open(sidecar, "w", newline="", encoding="utf-8") as handle:
        handle.writelines(image_id + "\n" for image_id in done)
    return done


def _complete_lines(data: bytes) -> list[tuple[bytes, int]]:
    """Every line of ``data`` that ends in a newline, with the offset just after it."""
    lines, start = [], 0
    while (stop := data.find(b"\n", start)) >= 0:
        lines.append((data[start:stop], stop + 1))
        start = stop + 1
    return lines


def _first_field_row(line: bytes) -> list[str]:
    """One CSV line (bytes, no newline) as its fields."""
    try:
        text = line.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError:
        return [""]
    return next(csv.reader([text]), None) or [""]


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
        file_name = image_key(image_id)
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
