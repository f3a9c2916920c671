"""SKU-110K annotation and class-map CSV readers (§3, §8.1–§8.3); NumPy/pandas only.

Kept free of Keras so evaluation and other tools read the ground truth without TensorFlow; the
generator built on these readers is :mod:`.csv_generator`.

Annotation CSV (no header, one box per row, §8.1)::

    image_name,x1,y1,x2,y2,class,image_width,image_height
    test_0.jpg,5,1429,219,1612,object,2336,4160

Also accepted: the 6-column fizyr form ``image_name,x1,y1,x2,y2,class`` (no sizes, so no clamping)
and image-only rows ``img,,,,,,,`` / ``img,,,,,`` for an image without boxes (B8; the original's
branch for them was dead code).

Row rules, in the original's order (§8.1):
1. cast coordinates (and sizes) to int, else ``line N: malformed x2: 'abc'``;
2. clamp to the CSV's image size: x1 >= W -> W-1, x2 >= W -> W-1, y1 > H -> H-1 (QUIRK: ``>``),
   y2 >= H -> H-1;
3. skip rows with x1 < 0, y1 < 0, x2 <= 0 or y2 <= 0: one ``warnings.warn`` per file summarising
   them (count, first lines; images left with no row at all are dropped and counted);
4. (generator) images that do not exist are skipped with one warning, or an error if none exists;
5. x2 <= x1, y2 <= y1 and unknown classes raise :class:`~..errors.InputError` (a ``ValueError``).

Every error names the file's base name and the line, e.g. ``annotations.csv line 17: x2 (3) must be
higher than x1 (5)``. The reader is vectorised (pandas C parser + NumPy): the 1.2 M rows of the
SKU-110K train split parse in about a second or two; per-row Python only runs to word the message of
the first bad row. Blank lines are ignored. All warnings here use :func:`warnings.warn`
(``UserWarning``).

Image sizes for the ratio grouping come from the image headers (PIL), only for the CSV's images and
only when asked (B5 right order, B6 no folder scan). Paths are resolved once (B4).
"""

from __future__ import annotations

import csv
import io
import os
import warnings

import numpy as np
import pandas as pd

from object_detector_retinanet.keras_retinanet.errors import InputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
FORMAT_MESSAGE = "format should be 'img_file,x1,y1,x2,y2,class_name' or 'img_file,,,,,'"
_COLUMNS = ("image_name", "x1", "y1", "x2", "y2", "class_name", "image_width", "image_height")
_MAX_LISTED = 5  # how many lines / names a warning quotes


def read_classes(csv_path: str | os.PathLike) -> dict[str, int]:
    """Read a ``class_name,class_id`` map (§8.2), e.g. ``object,0``; blank lines ignored.

    Raises:
        InputError: ``<file> line N: format should be 'class_name,class_id'``, ``... malformed
            class ID: 'x'``, ``... duplicate class name: 'object'``, or no class at all.
    """
    csv_path = os.fspath(csv_path)
    base = os.path.basename(csv_path)
    result: dict[str, int] = {}
    with open(csv_path, newline="", encoding="utf-8-sig") as file:
        for line, row in enumerate(csv.reader(file), start=1):
            if not row:
                continue
            if len(row) != 2:
                raise InputError(f"{base} line {line}: format should be 'class_name,class_id'")
            class_name, class_id = row
            try:
                class_id = int(class_id)
            except ValueError:
                raise InputError(f"{base} line {line}: malformed class ID: {class_id!r}") from None
            if class_name in result:
                raise InputError(f"{base} line {line}: duplicate class name: {class_name!r}")
            result[class_name] = class_id
    if not result:
        raise InputError(f"{csv_path}: no classes")
    return result


# --- table reading --------------------------------------------------------------------------


def _read_table(csv_path: str) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """All rows as 8 object arrays of str ('' where absent), field counts and a blank-line mask.

    Fast path: count commas per line with NumPy and let pandas' C parser split the fields; rows
    map one-to-one to lines. Files with quotes (or any mismatch) go through :mod:`csv` instead.
    """
    with open(csv_path, "rb") as file:
        raw = file.read()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    fast = _read_table_fast(raw) if b'"' not in raw else None
    return fast if fast is not None else _read_table_csv(raw)


def _read_table_fast(raw: bytes):
    data = np.frombuffer(raw, dtype=np.uint8)
    if data.size == 0:
        return [np.empty(0, dtype=object) for _ in _COLUMNS], np.zeros(0, int), np.zeros(0, bool)
    newlines = np.flatnonzero(data == ord("\n"))
    ends = newlines if data[-1] == ord("\n") else np.append(newlines, data.size)
    starts = np.concatenate([[0], ends[:-1] + 1])
    commas = np.flatnonzero(data == ord(","))
    ncols = np.diff(np.searchsorted(commas, ends), prepend=0) + 1
    stripped_ends = ends - (data[np.maximum(ends - 1, 0)] == ord("\r")) * (ends > starts)
    blank = stripped_ends == starts
    try:
        frame = pd.read_csv(
            io.BytesIO(raw),
            header=None,
            names=list(range(max(len(_COLUMNS), int(ncols.max())))),
            dtype=str,
            na_filter=False,
            skip_blank_lines=False,
            quoting=csv.QUOTE_NONE,
            engine="c",
            encoding="utf-8",
        )
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError):
        return None
    if len(frame) != len(ends):
        return None
    fields = [frame[k].to_numpy(dtype=object) for k in range(len(_COLUMNS))]
    return fields, ncols.astype(np.int64), blank


def _read_table_csv(raw: bytes):
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))
    ncols = np.array([len(row) for row in rows], dtype=np.int64)
    blank = ncols == 0
    padded = [row[: len(_COLUMNS)] + [""] * (len(_COLUMNS) - len(row)) for row in rows]
    table = np.array(padded, dtype=object).reshape(len(rows), len(_COLUMNS))
    return [table[:, k] for k in range(len(_COLUMNS))], ncols, blank


def _to_int(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``int()`` of every string; (int64 values with 0 where malformed, malformed mask)."""
    try:
        return values.astype(np.int64), np.zeros(values.shape, dtype=bool)
    except (ValueError, TypeError, OverflowError):
        out = np.zeros(values.shape, dtype=np.int64)
        bad = np.zeros(values.shape, dtype=bool)
        for i, value in enumerate(values):  # error path only
            try:
                out[i] = int(value)
            except (ValueError, TypeError, OverflowError):
                bad[i] = True
        return out, bad


def _clamp(x1: int, y1: int, x2: int, y2: int, width: int, height: int) -> tuple[int, ...]:
    """Spec §8.1 step 2 for one row (mirrors the vectorised clamp in :func:`parse_annotations`)."""
    x1 = width - 1 if x1 >= width else x1
    x2 = width - 1 if x2 >= width else x2
    y1 = height - 1 if y1 > height else y1  # QUIRK: `>`, not `>=`, as the original
    y2 = height - 1 if y2 >= height else y2
    return x1, y1, x2, y2


def _row_error(row: list[str], ncols: int, classes: dict[str, int]) -> str | None:
    """The message of a row's first problem in the original's order, None if it is fine.

    The single source of the wording; the vectorised masks only decide *which* row to word.
    """
    if ncols not in (6, 8) or row[0] == "":
        return FORMAT_MESSAGE
    if all(value == "" for value in row[1:6]):
        return None  # image-only row (B8)
    names = _COLUMNS[1:5] + (_COLUMNS[6:8] if ncols == 8 else ())
    values = {}
    for name in names:
        raw = row[_COLUMNS.index(name)]
        try:
            values[name] = int(raw)
        except (ValueError, TypeError, OverflowError):
            return f"malformed {name}: {raw!r}"
    x1, y1, x2, y2 = (values[name] for name in _COLUMNS[1:5])
    if ncols == 8:
        x1, y1, x2, y2 = _clamp(x1, y1, x2, y2, values["image_width"], values["image_height"])
    if x1 < 0 or y1 < 0 or x2 <= 0 or y2 <= 0:
        return None  # skipped with a warning
    if x2 <= x1:
        return f"x2 ({x2}) must be higher than x1 ({x1})"
    if y2 <= y1:
        return f"y2 ({y2}) must be higher than y1 ({y1})"
    if row[5] not in classes:
        return f"unknown class name: {row[5]!r} (classes: {sorted(classes)})"
    return None


def parse_annotations(
    csv_path: str | os.PathLike, classes: dict[str, int]
) -> dict[str, dict[str, np.ndarray]]:
    """Parse an SKU-110K annotation CSV (§8.1); touches no image file.

    Args:
        csv_path: the annotation CSV.
        classes: class name -> id (:func:`read_classes`).

    Returns:
        image name (as written in the CSV) -> ``{"bboxes": float64 (M, 4), "labels": int64 (M,)}``,
        in order of first appearance (KEEP); image-only rows give M = 0 (B8).

    Raises:
        InputError (a ValueError): the first bad row, as ``<file> line N: <problem>``.
    """
    csv_path = os.fspath(csv_path)
    base = os.path.basename(csv_path)
    fields, ncols, blank = _read_table(csv_path)
    names, x1s, y1s, x2s, y2s, class_names, widths, heights = fields
    n = len(names)

    used = ~blank
    format_bad = used & (((ncols != 6) & (ncols != 8)) | (names == ""))
    image_only = used & ~format_bad
    for column in (x1s, y1s, x2s, y2s, class_names):
        image_only &= column == ""
    box = used & ~format_bad & ~image_only
    sized = box & (ncols == 8)

    ints, malformed = {}, np.zeros(n, dtype=bool)
    for name, column, mask in (
        ("x1", x1s, box),
        ("y1", y1s, box),
        ("x2", x2s, box),
        ("y2", y2s, box),
        ("w", widths, sized),
        ("h", heights, sized),
    ):
        values = np.zeros(n, dtype=np.int64)
        values[mask], bad = _to_int(column[mask])
        malformed[np.flatnonzero(mask)[bad]] = True
        ints[name] = values
    x1, y1, x2, y2, w, h = (ints[k] for k in ("x1", "y1", "x2", "y2", "w", "h"))

    clamp = sized & ~malformed
    x1 = np.where(clamp & (x1 >= w), w - 1, x1)
    x2 = np.where(clamp & (x2 >= w), w - 1, x2)
    y1 = np.where(clamp & (y1 > h), h - 1, y1)  # QUIRK: `>`, not `>=` (§8.1)
    y2 = np.where(clamp & (y2 >= h), h - 1, y2)

    numeric = box & ~malformed
    skipped = numeric & ((x1 < 0) | (y1 < 0) | (x2 <= 0) | (y2 <= 0))
    checked = numeric & ~skipped
    class_codes, class_uniques = pd.factorize(class_names)  # few distinct names: map those
    class_ids = np.array([classes.get(name, np.nan) for name in class_uniques] + [np.nan])
    labels = class_ids[class_codes]  # code -1 (none) -> the trailing NaN
    errors = format_bad | malformed | (checked & ((x2 <= x1) | (y2 <= y1) | np.isnan(labels)))
    if errors.any():
        first = int(np.argmax(errors))
        row = [str(column[first]) for column in fields]
        message = _row_error(row, int(ncols[first]), classes)
        assert message is not None, f"internal error: line {first + 1} flagged but not worded"
        raise InputError(f"{base} line {first + 1}: {message}")

    kept = image_only | checked
    result = _group_rows(
        names[kept], checked[kept], x1[kept], y1[kept], x2[kept], y2[kept], labels[kept]
    )
    if skipped.any():
        lines = (np.flatnonzero(skipped) + 1)[:_MAX_LISTED].tolist()
        affected = pd.unique(names[skipped])
        dropped = [name for name in affected if name not in result]
        warnings.warn(
            f"{base}: skipped {int(skipped.sum())} boxes with x1 < 0, y1 < 0, x2 <= 0 or y2 <= 0 "
            f"(has some bad boxes annotations) in {len(affected)} images, lines {lines}"
            + ("..." if skipped.sum() > _MAX_LISTED else "")
            + (
                f"; {len(dropped)} images had no other row and are dropped: {dropped[:_MAX_LISTED]}"
                if dropped
                else ""
            ),
            stacklevel=2,
        )
    return result


def _group_rows(names, is_box, x1, y1, x2, y2, labels) -> dict[str, dict[str, np.ndarray]]:
    """Rows -> per-image dict in order of first appearance (one stable sort, no Python loop/row)."""
    codes, uniques = pd.factorize(names, sort=False)
    box_codes = codes[is_box]
    order = np.argsort(box_codes, kind="stable")
    boxes = np.stack([x1, y1, x2, y2], axis=1)[is_box][order].astype(np.float64)
    box_labels = labels[is_box][order].astype(np.int64)
    bounds = np.concatenate([[0], np.cumsum(np.bincount(box_codes, minlength=len(uniques)))])
    return {
        str(name): {
            "bboxes": boxes[bounds[j] : bounds[j + 1]],
            "labels": box_labels[bounds[j] : bounds[j + 1]],
        }
        for j, name in enumerate(uniques)
    }


def read_image_list(csv_path: str | os.PathLike) -> list[str] | None:
    """The image names of a list with one name a line (a one-column CSV), in order, duplicates
    dropped; ``None`` when a line has more fields (an annotation CSV: :func:`parse_annotations`).

    Raises:
        InputError: ``<file>: not UTF-8 text``, or no name at all.
    """
    csv_path = os.fspath(csv_path)
    base = os.path.basename(csv_path)
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as file:
            rows = [row for row in csv.reader(file) if any(cell.strip() for cell in row)]
    except UnicodeDecodeError:
        raise InputError(f"{base}: not UTF-8 text; expected image names or annotations") from None
    if any(len(row) != 1 for row in rows):
        return None
    if not rows:
        raise InputError(f"{base}: no image name in the file")
    return list(dict.fromkeys(row[0].strip() for row in rows))


def list_images(base_dir: str) -> list[str]:
    """Image files directly in ``base_dir`` (by extension, case-insensitive), sorted by name."""
    return sorted(
        name
        for name in os.listdir(base_dir)
        if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(base_dir, name))
    )
