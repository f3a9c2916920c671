"""Tests of the OpenCV drawing helpers and label colours (§11.2)."""

from __future__ import annotations

import numpy as np
import pytest

from object_detector_retinanet.keras_retinanet.utils.colors import label_color
from object_detector_retinanet.keras_retinanet.utils.visualization import (
    box_thickness,
    draw_annotations,
    draw_box,
    draw_boxes,
    draw_caption,
    draw_detections,
)

BACKGROUND = 128
GREEN = (0, 255, 0)
RED = (0, 0, 255)


def blank(height=80, width=120):
    return np.full((height, width, 3), BACKGROUND, dtype=np.uint8)


def is_color(image, color):
    return np.all(image == np.asarray(color, dtype=np.uint8), axis=-1)


def changed(image):
    return np.any(image != BACKGROUND, axis=-1)


def test_draw_box_outline_only_thickness_two():
    image = blank()
    draw_box(image, [20, 30, 60, 70], RED)
    assert is_color(image, RED)[30, 40]  # middle of the top edge (y1 = 30)
    assert is_color(image, RED)[50, 20]  # middle of the left edge (x1 = 20)
    assert is_color(image, RED)[70, 40] and is_color(image, RED)[50, 60]  # bottom and right edges
    assert not changed(image)[50, 40]  # interior untouched
    assert not changed(image)[:25].any() and not changed(image)[:, :15].any()  # outside untouched
    # thickness 2 around y = 30: 2-3 full-colour rows, plus an anti-aliased fringe row each side
    assert 2 <= np.flatnonzero(is_color(image, RED)[:45, 40]).size <= 3
    rows = np.flatnonzero(changed(image)[:45, 40])
    assert rows.min() >= 28 and rows.max() <= 32


def test_draw_box_truncates_float_coordinates():
    a, b = blank(), blank()
    draw_box(a, [20.9, 30.7, 60.2, 70.99], RED)
    draw_box(b, [20, 30, 60, 70], RED)  # astype(int) truncation, as the original
    np.testing.assert_array_equal(a, b)


def test_draw_caption_white_on_black_ten_pixels_above():
    image = blank()
    draw_caption(image, [10, 50, 100, 70], "0.88: 0.75")
    assert is_color(image, (255, 255, 255)).any()
    assert is_color(image, (0, 0, 0)).any()
    rows, cols = np.nonzero(changed(image))
    # baseline at y1 - 10 = 40; FONT_HERSHEY_PLAIN scale 1 digits are < 15 px tall; the thickness-2
    # black pass spills at most 2 px below the baseline and 2 px left of x1
    assert rows.max() <= 42 and rows.min() >= 40 - 15
    assert cols.min() >= 10 - 2
    assert not changed(image)[50:].any()  # nothing on or below the box's top edge


def test_draw_boxes_draws_each_box():
    image = blank()
    draw_boxes(image, np.array([[5, 5, 25, 25], [60, 40, 100, 70]]), GREEN)
    assert is_color(image, GREEN)[5, 15] and is_color(image, GREEN)[40, 80]


def test_draw_detections_threshold_is_strict_and_color_red():
    image = blank(80, 300)
    # captions start at x1 and are about 10 px per character wide: keep the boxes 100+ px apart
    boxes = np.array([[10, 40, 40, 70], [150, 40, 180, 70], [230, 40, 260, 70]])
    confidence = np.array([0.75, 0.5, 0.25])  # only 0.75 > 0.5 is drawn; 0.5 itself is not
    hard = np.array([0.875, 0.5, 0.5])
    draw_detections(image, boxes, confidence, hard)
    red = is_color(image, RED)
    assert red[:, :60].any()
    assert not red[:, 60:].any()
    assert not changed(image)[:, 140:].any()  # no caption either for the undrawn ones


def test_draw_detections_custom_threshold_and_color():
    image = blank()
    draw_detections(image, [[10, 40, 40, 70]], [0.3], [0.9], threshold=0.2, color=GREEN)
    assert is_color(image, GREEN).any() and not is_color(image, RED).any()


def test_draw_detections_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="2 boxes, 1 confidences"):
        draw_detections(blank(), np.zeros((2, 4)), [0.9], [0.9, 0.9])


def test_draw_annotations_green_with_caption_and_empty_ok():
    image = blank()
    names = []

    def label_to_name(label):
        names.append(label)
        return "object"

    annotations = {"bboxes": np.array([[20.0, 30.0, 60.0, 70.0]]), "labels": np.array([0])}
    draw_annotations(image, annotations, label_to_name)
    assert names == [0]
    assert is_color(image, GREEN)[30, 40]
    assert is_color(image, (255, 255, 255))[:30].any()  # caption above the box

    mapped = blank()
    draw_annotations(mapped, annotations, {0: "object"})  # a mapping works like the callable
    np.testing.assert_array_equal(mapped, image)

    untouched = blank()
    draw_annotations(untouched, {"bboxes": np.zeros((0, 4)), "labels": np.zeros(0, np.int64)}, None)
    assert not changed(untouched).any()


def test_draw_annotations_rejects_label_count_mismatch():
    with pytest.raises(ValueError, match="1 boxes but 2 labels"):
        draw_annotations(blank(), {"bboxes": np.zeros((1, 4)), "labels": np.zeros(2)}, None)


def test_label_color_stable_distinct_valid():
    colors = [label_color(label) for label in range(10)]
    assert colors == [label_color(label) for label in range(10)]  # deterministic
    assert len(set(colors)) == 10
    for color in colors:
        assert len(color) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in color)
    with pytest.raises(ValueError, match="-1"):
        label_color(-1)


def test_box_thickness_thin_on_small_images():
    assert box_thickness((256, 256, 3)) == 1
    assert box_thickness((511, 2000)) == 1
    assert box_thickness((512, 512, 3)) == 2  # the original's width from 512 px up


def test_draw_image_captions_off_by_default():
    from object_detector_retinanet.keras_retinanet.inference import draw_image

    image = blank(256, 256)
    # one detection (x1, y1, x2, y2, confidence, hard_score, label) and one GT box
    detections = np.array([[100, 100, 150, 150, 0.9, 0.8, 0]], dtype=np.float64)
    annotations = {"bboxes": np.array([[20, 40, 60, 90]]), "labels": np.array([0])}
    plain = draw_image(image, detections, annotations)
    assert not is_color(plain, (255, 255, 255)).any()  # no white caption text
    assert not changed(plain)[:38].any()  # nothing above the GT box (top edge at row 40)
    # 1 px outlines on a 256 px image: the detection's top edge is row 100 only
    assert is_color(plain, (0, 0, 255))[100, 110:140].all()
    assert not is_color(plain, (0, 0, 255))[101, 110:140].any()
    captioned = draw_image(image, detections, annotations, captions=True)
    assert is_color(captioned, (255, 255, 255))[75:95, 100:200].any()  # caption above the box
    assert is_color(captioned, (255, 255, 255))[15:35, 20:100].any()  # GT class name
