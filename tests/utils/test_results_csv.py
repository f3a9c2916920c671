"""Tests for utils/results_csv.py: the results CSV's name, writer and reader (§11.1, B18)."""

import csv
import os
import re

import numpy as np
import pytest

from object_detector_retinanet.keras_retinanet.errors import InputError
from object_detector_retinanet.keras_retinanet.utils.results_csv import (
    RESULTS_HEADER,
    ResultsWriter,
    image_id_for,
    read_results_csv,
    results_filename,
)


# --- writing --------------------------------------------------------------------------------------
def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_image_id_is_parent_folder_and_file_name():
    path = os.path.join("data", "SKU110K", "images", "test_0.jpg")
    assert image_id_for(path) == "images/test_0.jpg"


def test_results_writer_header_truncation_and_incremental_flush(tmp_path):
    path = tmp_path / "sub" / "results.csv"
    with ResultsWriter(path) as writer:
        assert read_rows(path) == [list(RESULTS_HEADER)]  # header on disk at once
        writer.write_image("images/a.jpg", np.array([[10.9, 20.2, 30.999, 40.0, 0.75, 0.5, 0.0]]))
        # B18: the rows are on disk before the writer is closed
        assert read_rows(path)[1] == ["images/a.jpg", "10", "20", "30", "40", "0.75", "0.5"]
        writer.write_image("images/b.jpg", np.zeros((0, 7)))  # an image without detections
        writer.write_image("images/c.jpg", np.array([[1.5, 2.5, 3.5, 4.5, 0.25, 0.125]]))
        assert len(read_rows(path)) == 3
        assert writer.rows_written == 2 and writer.images_written == 3
    assert read_rows(path) == [
        ["image_id", "x1", "y1", "x2", "y2", "confidence", "hard_score"],
        ["images/a.jpg", "10", "20", "30", "40", "0.75", "0.5"],
        ["images/c.jpg", "1", "2", "3", "4", "0.25", "0.125"],
    ]


def test_results_writer_rejects_bad_rows(tmp_path):
    with ResultsWriter(tmp_path / "r.csv") as writer:
        with pytest.raises(ValueError, match="images/x.jpg"):
            writer.write_image("images/x.jpg", np.zeros((2, 4)))


def test_b18_results_filename_is_filesystem_safe(tmp_path):
    name = results_filename(tmp_path, 0.5)
    base = os.path.basename(name)
    assert os.path.dirname(name) == str(tmp_path)
    assert re.fullmatch(r"detections_output_iou_0\.5_[0-9A-Za-z_.-]+\.csv", base), base
    # the original's stamp was str(datetime.utcnow()): spaces and colons; they are replaced
    unsafe = results_filename(tmp_path, 1, stamp="2019-05-02 17:10:30.123456")
    assert os.path.basename(unsafe) == "detections_output_iou_1.0_2019-05-02_17_10_30.123456.csv"


# --- reading --------------------------------------------------------------------------------------
def _write(tmp_path, text, name="results.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_read_results_csv_strips_folder_and_picks_score(tmp_path):
    path = _write(
        tmp_path,
        "image_id,x1,y1,x2,y2,confidence,hard_score\n"
        "images/test_0.jpg,5,10,50,60,0.75,0.6\n"
        "images/test_1.jpg,1,2,3,4,0.5,0.9\n"
        "\n"
        "images/test_0.jpg,7,8,9,10,0.25,0.2\n",
    )
    dets = read_results_csv(path)
    assert list(dets) == ["test_0.jpg", "test_1.jpg"]  # first-appearance order, folder stripped
    np.testing.assert_array_equal(dets["test_0.jpg"], [[5, 10, 50, 60, 0.75], [7, 8, 9, 10, 0.25]])
    hard = read_results_csv(path, score_field="hard_score")
    np.testing.assert_array_equal(hard["test_1.jpg"], [[1, 2, 3, 4, 0.9]])


def test_read_results_csv_header_only_is_empty(tmp_path):
    path = _write(tmp_path, "image_id,x1,y1,x2,y2,confidence,hard_score\n")
    assert read_results_csv(path) == {}


@pytest.mark.parametrize(
    "row, message",
    [
        ("images/a.jpg,1,2,3,4,0.5", "line 3: expected 7 columns"),
        ("images/a.jpg,1,two,3,4,0.5,0.5", "line 3: malformed y1: 'two'"),
        ("images/a.jpg,1,2,3,4,nan,0.5", "line 3: column confidence is not finite"),
        ("images/a.jpg,5,2,3,4,0.5,0.5", "line 3: box .* x2 < x1"),
        (",1,2,3,4,0.5,0.5", "line 3: empty image_id"),
        ("other/a.jpg,1,2,3,4,0.5,0.5", "line 3: image_id 'other/a.jpg' and 'images/a.jpg'"),
    ],
)
def test_read_results_csv_malformed_row_names_file_and_line(tmp_path, row, message):
    path = _write(
        tmp_path,
        "image_id,x1,y1,x2,y2,confidence,hard_score\nimages/a.jpg,1,2,3,4,0.5,0.5\n" + row + "\n",
    )
    with pytest.raises(ValueError, match=message) as info:
        read_results_csv(path)
    assert str(path) in str(info.value)


def test_read_results_csv_without_header_fails_on_line_1(tmp_path):
    path = _write(tmp_path, "images/a.jpg,1,2,3,4,0.5,0.5\n")
    with pytest.raises(ValueError, match="line 1: header .* lacks column"):
        read_results_csv(path)


def test_read_results_csv_errors_are_input_errors(tmp_path):
    malformed = _write(tmp_path, "image_id,x1,y1,x2,y2,confidence,hard_score\na.jpg,1,2,x,4,1,1\n")
    with pytest.raises(InputError, match=r"results.csv line 2: malformed x2: 'x'$"):
        read_results_csv(malformed)
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(InputError, match="binary.csv: not UTF-8 text"):
        read_results_csv(binary)
