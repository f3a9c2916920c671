"""Tests for the SKU-110K CSV readers and CSVGenerator (§8.1–§8.3; B4, B5, B6, B8, B25)."""

import os
import re
import warnings

import numpy as np
import pytest
from PIL import Image

from object_detector_retinanet.keras_retinanet.preprocessing import csv_generator
from object_detector_retinanet.keras_retinanet.preprocessing.csv_generator import (
    FORMAT_MESSAGE,
    CSVGenerator,
    parse_annotations,
    read_classes,
)

CLASSES = {"object": 0}


def _write(path, text):
    path.write_text(text)
    return path


def _image(path, width, height, color=(10, 20, 30), fmt=None):
    Image.new("RGB", (width, height), color).save(path, format=fmt)
    return path


def _parse(tmp_path, text, name="annotations.csv"):
    return parse_annotations(_write(tmp_path / name, text), CLASSES)


# --- class map (§8.2) ---


def test_read_classes(tmp_path):
    assert read_classes(_write(tmp_path / "c.csv", "object,0\n\nshelf,1\n")) == {
        "object": 0,
        "shelf": 1,
    }


@pytest.mark.parametrize(
    "text, message",
    [
        ("object,0\nshelf\n", "c.csv line 2: format should be 'class_name,class_id'"),
        ("object,zero\n", "c.csv line 1: malformed class ID: 'zero'"),
        ("object,0\nobject,1\n", "c.csv line 2: duplicate class name: 'object'"),
    ],
)
def test_read_classes_errors(tmp_path, text, message):
    with pytest.raises(ValueError) as info:
        read_classes(_write(tmp_path / "c.csv", text))
    assert str(info.value) == message


def test_default_class_file_is_object_zero():
    assert read_classes(csv_generator.DEFAULT_CLASS_FILE) == {"object": 0}


# --- annotation rows (§8.1) ---


def test_parse_eight_columns_in_first_appearance_order(tmp_path):
    result = _parse(
        tmp_path,
        "b.jpg,5,10,20,30,object,100,100\n"
        "a.jpg,1,2,3,4,object,100,100\n"
        "b.jpg,0,0,1,1,object,100,100\n",
    )
    assert list(result) == ["b.jpg", "a.jpg"]  # KEEP: dict order = first appearance
    np.testing.assert_array_equal(result["b.jpg"]["bboxes"], [[5, 10, 20, 30], [0, 0, 1, 1]])
    assert result["b.jpg"]["bboxes"].dtype == np.float64
    assert result["a.jpg"]["labels"].tolist() == [0] and result["a.jpg"]["labels"].dtype == np.int64


def test_clamp_x_and_y_to_size_minus_one(tmp_path):
    # W = 100, H = 50: x2 150 >= 100 -> 99; y2 60 >= 50 -> 49
    result = _parse(tmp_path, "a.jpg,10,5,150,60,object,100,50\n")
    np.testing.assert_array_equal(result["a.jpg"]["bboxes"], [[10, 5, 99, 49]])


def test_clamp_x1_at_width(tmp_path):
    # x1 = 100 >= W = 100 -> 99, x2 = 120 -> 99: the box collapses and raises
    message = r"^annotations.csv line 1: x2 \(99\) must be higher than x1 \(99\)$"
    with pytest.raises(ValueError, match=message):
        _parse(tmp_path, "a.jpg,100,0,120,10,object,100,50\n")


def test_quirk_y1_clamped_only_when_greater_than_height(tmp_path):
    # QUIRK: y1 = H = 50 is NOT clamped (`>`), y2 = 60 -> 49; so the message shows y1 (50)
    with pytest.raises(ValueError, match=r"line 1: y2 \(49\) must be higher than y1 \(50\)$"):
        _parse(tmp_path, "a.jpg,0,50,10,60,object,100,50\n")
    # y1 = 51 > 50 -> 49
    with pytest.raises(ValueError, match=r"line 1: y2 \(49\) must be higher than y1 \(49\)$"):
        _parse(tmp_path, "a.jpg,0,51,10,60,object,100,50\n")


@pytest.mark.parametrize("row", ["-1,0,5,5", "0,-1,5,5", "0,0,0,5", "0,0,5,0"])
def test_bad_boxes_are_skipped_with_one_warning(tmp_path, row):
    text = f"a.jpg,1,1,5,5,object,10,10\na.jpg,{row},object,10,10\n"
    with pytest.warns(UserWarning, match=r"annotations.csv: skipped 1 boxes .* lines \[2\]"):
        result = _parse(tmp_path, text)
    np.testing.assert_array_equal(result["a.jpg"]["bboxes"], [[1, 1, 5, 5]])


def test_skipped_rows_do_not_raise_for_other_problems(tmp_path):
    # step 3 (skip) comes before step 5 (x2 <= x1, unknown class): no error for this row
    with pytest.warns(UserWarning, match="skipped 1 boxes"):
        result = _parse(tmp_path, "a.jpg,-5,0,-9,5,car,10,10\nb.jpg,1,1,2,2,object,10,10\n")
    assert list(result) == ["b.jpg"]


def test_image_with_only_skipped_rows_is_dropped_and_named(tmp_path):
    with pytest.warns(UserWarning, match=r"1 images had no other row and are dropped: \['a.jpg'\]"):
        result = _parse(tmp_path, "a.jpg,-1,0,5,5,object,10,10\nb.jpg,1,1,2,2,object,10,10\n")
    assert list(result) == ["b.jpg"]


@pytest.mark.parametrize(
    "row, message",
    [
        ("a.jpg,5,0,5,5,object,10,10", "x2 (5) must be higher than x1 (5)"),
        ("a.jpg,0,5,5,4,object,10,10", "y2 (4) must be higher than y1 (5)"),
        ("a.jpg,0,0,5,5,car,10,10", "unknown class name: 'car' (classes: ['object'])"),
        ("a.jpg,0,0,abc,5,object,10,10", "malformed x2: 'abc'"),
        ("a.jpg,0,0,5.5,5,object,10,10", "malformed x2: '5.5'"),
        ("a.jpg,0,0,5,5,object,ten,10", "malformed image_width: 'ten'"),
        ("a.jpg,0,0,5,,object,10,10", "malformed y2: ''"),
        ("a.jpg,0,0,5,5,object,10", FORMAT_MESSAGE),
        ("a.jpg,0,0,5,5", FORMAT_MESSAGE),
        ("a.jpg,0,0,5,5,object,10,10,", FORMAT_MESSAGE),
        (",0,0,5,5,object,10,10", FORMAT_MESSAGE),
        ("a.jpg", FORMAT_MESSAGE),
    ],
)
def test_errors_name_file_and_line(tmp_path, row, message):
    text = "ok.jpg,1,1,5,5,object,10,10\n" + row + "\n"
    with pytest.raises(ValueError) as info:
        _parse(tmp_path, text, name="annotations_val.csv")
    assert str(info.value) == f"annotations_val.csv line 2: {message}"


def test_first_bad_row_is_reported(tmp_path):
    text = "a.jpg,1,1,5,5,object,10,10\na.jpg,1,1,5,5,car,10,10\na.jpg,x,1,5,5,object,10,10\n"
    with pytest.raises(ValueError, match="^annotations.csv line 2: unknown class name"):
        _parse(tmp_path, text)


def test_blank_lines_ignored_but_counted(tmp_path):
    with pytest.raises(ValueError, match="^annotations.csv line 3: x2"):
        _parse(tmp_path, "a.jpg,1,1,5,5,object,10,10\n\na.jpg,5,1,5,5,object,10,10\n")


def test_crlf_bom_and_quoted_fallback_agree(tmp_path):
    plain = "a.jpg,1,2,3,4,object,10,10\nb.jpg,,,,,,,\n"
    expected = _parse(tmp_path, plain, "plain.csv")
    (tmp_path / "crlf.csv").write_bytes(b"\xef\xbb\xbf" + plain.replace("\n", "\r\n").encode())
    quoted = '"a.jpg",1,2,3,4,"object",10,10\nb.jpg,,,,,,,\n'  # quotes -> csv module path
    for result in (parse_annotations(tmp_path / "crlf.csv", CLASSES), _parse(tmp_path, quoted)):
        assert list(result) == list(expected)
        np.testing.assert_array_equal(result["a.jpg"]["bboxes"], expected["a.jpg"]["bboxes"])


def test_quoted_fallback_reports_lines(tmp_path):
    with pytest.raises(ValueError, match=r"^q.csv line 2: x2 \(1\) must be higher than x1 \(3\)$"):
        _parse(tmp_path, '"a.jpg",1,2,3,4,object,10,10\n"b.jpg",3,2,1,4,object,10,10\n', "q.csv")


def test_six_column_box_rows_are_not_clamped(tmp_path):
    result = _parse(tmp_path, "a.jpg,1,2,300,400,object\n")  # no size -> nothing to clamp to
    np.testing.assert_array_equal(result["a.jpg"]["bboxes"], [[1, 2, 300, 400]])


def test_b8_image_only_rows(tmp_path):
    # the original's empty-row branch was dead code (int('') raised first)
    result = _parse(
        tmp_path,
        "empty8.jpg,,,,,,,\nempty6.jpg,,,,,\nboth.jpg,,,,,,,\nboth.jpg,1,1,2,2,object,9,9\n",
    )
    assert list(result) == ["empty8.jpg", "empty6.jpg", "both.jpg"]
    assert result["empty8.jpg"]["bboxes"].shape == (0, 4)
    assert result["empty6.jpg"]["labels"].shape == (0,)
    np.testing.assert_array_equal(result["both.jpg"]["bboxes"], [[1, 1, 2, 2]])


def test_parse_does_not_touch_images(tmp_path):
    # no image exists at all: the parser still works (it is pure CSV)
    assert list(_parse(tmp_path, "nowhere.jpg,1,1,2,2,object,9,9\n")) == ["nowhere.jpg"]


# --- CSVGenerator ---


@pytest.fixture
def dataset(tmp_path):
    """Two images: wide.jpg 60x40 (W x H) and tall.png 20x30, in tmp_path/images."""
    images = tmp_path / "images"
    images.mkdir()
    _image(images / "wide.jpg", 60, 40)
    _image(images / "tall.png", 20, 30, color=(200, 100, 50))
    csv_path = _write(
        tmp_path / "annotations.csv",
        "wide.jpg,10,5,20,15,object,60,40\ntall.png,1,2,3,4,object,20,30\n",
    )
    return tmp_path, images, csv_path


def _generator(csv_path, images, **kwargs):
    kwargs.setdefault("shuffle_groups", False)
    return CSVGenerator(str(csv_path), base_dir=str(images), **kwargs)


def test_generator_basics(dataset):
    _, images, csv_path = dataset
    gen = _generator(csv_path, images, group_method="none")
    assert gen.size() == 2 and gen.num_classes() == 1 and gen.has_ground_truth
    assert gen.image_names == ["wide.jpg", "tall.png"]
    assert gen.image_path(0) == os.path.join(str(images), "wide.jpg")
    assert gen.name_to_label == {"object": 0} and gen.label_to_name == {0: "object"}
    assert gen.load_image(1).shape == (30, 20, 3)
    assert gen.load_image(1)[0, 0].tolist() == [50, 100, 200]  # BGR
    annotations = gen.load_annotations(0)
    annotations["bboxes"] += 1  # a copy: the parsed data stays intact
    np.testing.assert_array_equal(gen.load_annotations(0)["bboxes"], [[10, 5, 20, 15]])


def test_b5_aspect_ratio_is_width_over_height(dataset):
    _, images, csv_path = dataset
    gen = _generator(csv_path, images, group_method="ratio")
    assert gen.image_aspect_ratio(0) == pytest.approx(60 / 40)  # the original: 40 / 60
    assert gen.image_aspect_ratio(1) == pytest.approx(20 / 30)
    assert gen.groups == [[1], [0]]  # tall (0.67) before wide (1.5)


def test_b4_relative_base_dir(dataset, monkeypatch):
    tmp_path, _, _ = dataset
    monkeypatch.chdir(tmp_path)
    gen = CSVGenerator("annotations.csv", base_dir="images", shuffle_groups=False)
    assert gen.image_path(0) == os.path.join(str(tmp_path), "images", "wide.jpg")
    assert gen.image_aspect_ratio(0) == pytest.approx(1.5)  # the original: TypeError
    assert gen.load_image(0).shape == (40, 60, 3)


def test_base_dir_defaults_to_csv_folder(tmp_path):
    _image(tmp_path / "a.jpg", 8, 8)
    gen = CSVGenerator(str(_write(tmp_path / "ann.csv", "a.jpg,1,1,2,2,object,8,8\n")))
    assert gen.base_dir == str(tmp_path)


def test_b6_only_csv_images_are_opened(dataset, monkeypatch):
    tmp_path, images, csv_path = dataset
    (images / "corrupt.jpg").write_bytes(b"not a jpeg")  # not in the CSV: must not be touched
    (images / "sub").mkdir()
    _image(images / "sub" / "other.jpg", 5, 5)
    opened = []
    real_open = csv_generator.read_image_size.__globals__["Image"].open

    def spy(path, *args, **kwargs):
        opened.append(os.path.basename(os.fspath(path)))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(csv_generator.read_image_size.__globals__["Image"], "open", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gen = _generator(csv_path, images, group_method="ratio")
    assert sorted(opened) == ["tall.png", "wide.jpg"]
    assert gen.size() == 2


def test_missing_images_one_warning_and_skipped(dataset):
    tmp_path, images, _ = dataset
    csv_path = _write(
        tmp_path / "ann.csv",
        "wide.jpg,1,1,2,2,object,60,40\ngone1.jpg,1,1,2,2,object,9,9\ngone2.jpg,,,,,,,\n",
    )
    message = r"ann.csv: 2 of 3 images do not exist .*\['gone1.jpg', 'gone2.jpg'\]"
    with pytest.warns(UserWarning, match=message):
        gen = _generator(csv_path, images)
    assert gen.image_names == ["wide.jpg"]


def test_no_image_exists_raises_naming_base_dir(tmp_path):
    csv_path = _write(tmp_path / "ann.csv", "gone.jpg,1,1,2,2,object,9,9\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    message = f"none of the 1 images listed in ann.csv exists under base_dir {empty}"
    with pytest.raises(FileNotFoundError, match=re.escape(message)):
        CSVGenerator(str(csv_path), base_dir=str(empty))


def test_b8_image_without_boxes_in_a_batch(tmp_path):
    _image(tmp_path / "empty.jpg", 16, 16)
    csv_path = _write(tmp_path / "ann.csv", "empty.jpg,,,,,,,\n")
    seen = []

    def targets_fn(anchors, image_group, annotations_group, num_classes):
        seen.append(annotations_group[0]["bboxes"].shape)
        return {"dummy": np.zeros((len(image_group), 1), np.float32)}

    gen = CSVGenerator(str(csv_path), targets_fn=targets_fn, image_min_side=16, image_max_side=16)
    inputs, targets = gen[0]
    assert inputs.shape == (1, 16, 16, 3) and seen == [(0, 4)]


def test_inference_mode_lists_images_sorted(dataset):
    _, images, _ = dataset
    (images / "notes.txt").write_text("not an image")
    gen = CSVGenerator(
        None,
        base_dir=str(images),
        group_method="none",
        shuffle_groups=False,
        image_min_side=20,
        image_max_side=40,
    )
    assert not gen.has_ground_truth
    assert gen.image_names == ["tall.png", "wide.jpg"]
    assert gen.load_annotations(0)["bboxes"].shape == (0, 4)
    batch = gen[0]  # targets_fn=None -> the inputs alone
    assert isinstance(batch, np.ndarray) and batch.shape == (1, 30, 20, 3)  # scale 1 (20 / 20)


def test_b25_truncated_jpeg_skipped_with_warning(dataset):
    tmp_path, images, _ = dataset
    rng = np.random.default_rng(0)
    broken = images / "broken.jpg"
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(broken, quality=95)
    broken.write_bytes(broken.read_bytes()[:600])  # header intact, scan data cut
    csv_path = _write(
        tmp_path / "ann.csv",
        "broken.jpg,1,1,9,9,object,40,40\nwide.jpg,10,5,20,15,object,60,40\n",
    )
    gen = _generator(
        csv_path, images, group_method="none", targets_fn=None, image_min_side=40, image_max_side=60
    )
    with pytest.warns(UserWarning, match=r"skipping unreadable image .*broken.jpg"):
        batch = gen[0]
    assert batch.shape == (1, 40, 60, 3)  # replaced by the next good image, wide.jpg
    assert gen.bad_indices == {0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a known bad image is not retried (no second warning)
        gen[0]
