"""Tests for utils/results_csv.py: the results CSV's name, writer and reader (§11.1, B18)."""

import csv
import os
import re

import numpy as np
import pytest

from object_detector_retinanet.keras_retinanet.errors import InputError, MissingInput
from object_detector_retinanet.keras_retinanet.utils.results_csv import (
    RESULTS_HEADER,
    ResultsWriter,
    done_path,
    image_id_for,
    read_results_csv,
    results_filename,
    resume_results,
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


ROW = np.array([[1.0, 2.0, 3.0, 4.0, 0.5, 0.25, 0.0]])


def _three_images(path):
    with ResultsWriter(path) as writer:
        writer.write_image("images/a.jpg", np.repeat(ROW, 2, axis=0))
        writer.write_image("images/empty.jpg", np.zeros((0, 7)))
        writer.write_image("images/b.jpg", ROW)


def test_results_writer_lists_finished_images_in_the_done_file(tmp_path):
    path = tmp_path / "r.csv"
    _three_images(path)
    assert done_path(path) == f"{path}.done"
    with open(done_path(path)) as handle:
        assert handle.read() == "images/a.jpg\nimages/empty.jpg\nimages/b.jpg\n"


def test_resume_keeps_finished_images_and_drops_a_half_written_one(tmp_path):
    path = tmp_path / "r.csv"
    _three_images(path)
    complete = path.read_bytes()
    with open(path, "ab") as handle:  # image c: one row and half of another, not yet done
        handle.write(b"images/c.jpg,1,2,3,4,0.5,0.25\r\nimages/c.jpg,1,2")
    with open(done_path(path), "a") as handle:
        handle.write("images/c")  # a half-written line of the done file
    assert resume_results(path) == ["images/a.jpg", "images/empty.jpg", "images/b.jpg"]
    assert path.read_bytes() == complete
    with ResultsWriter(path, append=True) as writer:
        writer.write_image("images/c.jpg", ROW)
    rows = read_rows(path)
    assert rows[0] == list(RESULTS_HEADER) and len(rows) == 5  # one header, then 2 + 1 + 1 rows
    assert rows[-1][0] == "images/c.jpg"
    with open(done_path(path)) as handle:
        assert handle.read().splitlines()[-1] == "images/c.jpg"


def test_resume_drops_rows_of_an_image_not_marked_done(tmp_path):
    path = tmp_path / "r.csv"
    _three_images(path)
    done = done_path(path)
    with open(done) as handle:
        lines = handle.readlines()
    with open(done, "w") as handle:  # crashed after b's rows, before its line in the done file
        handle.writelines(lines[:2])
    assert resume_results(path) == ["images/a.jpg", "images/empty.jpg"]
    assert [row[0] for row in read_rows(path)[1:]] == ["images/a.jpg"] * 2


def test_resume_without_a_done_file_redoes_the_last_image(tmp_path):
    path = tmp_path / "r.csv"
    _three_images(path)
    os.remove(done_path(path))
    assert resume_results(path) == ["images/a.jpg"]
    assert [row[0] for row in read_rows(path)[1:]] == ["images/a.jpg"] * 2
    assert os.path.isfile(done_path(path))


def test_resume_rejects_other_files(tmp_path):
    with pytest.raises(MissingInput, match="no such results file"):
        resume_results(tmp_path / "gone.csv")
    other = _write(tmp_path, "a,b\n1,2\n")
    with pytest.raises(InputError, match="not a results CSV"):
        resume_results(other)


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
