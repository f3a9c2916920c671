"""Raw detections on disk (utils/raw_detections.py): round trip, the score mix, bad files."""

import numpy as np
import pytest

from object_detector_retinanet.keras_retinanet.errors import InputError, MissingInput
from object_detector_retinanet.keras_retinanet.utils.raw_detections import (
    RawDetections,
    iter_raw,
    load_raw,
    raw_path,
    save_raw,
)


def _raw(name="shelf_1.jpg", soft=(0.2, 0.9)):
    return RawDetections(
        image_name=name,
        image_shape=(480, 640),
        boxes=np.array([[10.5, 20.0, 50.0, 60.0], [12.0, 22.0, 52.0, 61.5]]),
        hard=np.array([0.8, 0.6]),
        soft=None if soft is None else np.array(soft),
        labels=np.array([0, 0]),
    )


def test_round_trip_keeps_every_field(tmp_path):
    path = save_raw(tmp_path, _raw())
    assert path == str(tmp_path / "shelf_1.jpg.npz") == raw_path(tmp_path, "images/shelf_1.jpg")
    back = load_raw(path)
    assert back.image_name == "shelf_1.jpg"
    assert back.image_shape == (480, 640)
    np.testing.assert_array_equal(back.boxes, _raw().boxes)
    np.testing.assert_array_equal(back.hard, [0.8, 0.6])
    np.testing.assert_array_equal(back.soft, [0.2, 0.9])
    np.testing.assert_array_equal(back.labels, [0, 0])
    assert not list(tmp_path.glob("*.part"))


def test_rows_mix_the_scores_and_sort_by_confidence():
    # r = 0.5: box 0 -> 0.5*0.8 + 0.5*0.2 = 0.5, box 1 -> 0.5*0.6 + 0.5*0.9 = 0.75: box 1 first.
    rows = _raw().rows(0.5)
    np.testing.assert_allclose(rows[:, 4], [0.75, 0.5])
    np.testing.assert_array_equal(rows[:, 5], [0.6, 0.8])  # hard scores follow their boxes
    np.testing.assert_array_equal(rows[0, :4], [12.0, 22.0, 52.0, 61.5])
    # r = 1: the hard score alone, box 0 first.
    np.testing.assert_allclose(_raw().rows(1.0)[:, 4], [0.8, 0.6])


def test_a_model_without_soft_scores_allows_only_the_hard_score(tmp_path):
    back = load_raw(save_raw(tmp_path, _raw(soft=None)))
    assert back.soft is None and not back.has_soft
    np.testing.assert_allclose(back.rows(1.0)[:, 4], [0.8, 0.6])
    with pytest.raises(ValueError, match="only r = 1"):
        back.rows(0.5)


def test_an_image_without_detections_round_trips(tmp_path):
    empty = RawDetections(
        "e.jpg", (10, 10), np.zeros((0, 4)), np.zeros(0), np.zeros(0), np.zeros(0)
    )
    back = load_raw(save_raw(tmp_path, empty))
    assert back.rows(0.5).shape == (0, 7) and back.has_soft


def test_iter_raw_reads_in_name_order_and_reports_bad_files(tmp_path):
    for name in ("b.jpg", "a.jpg"):
        save_raw(tmp_path, _raw(name))
    assert [raw.image_name for raw in iter_raw(tmp_path)] == ["a.jpg", "b.jpg"]
    (tmp_path / "c.jpg.npz").write_bytes(b"not a zip file")
    with pytest.raises(InputError, match=r"c\.jpg\.npz: cannot read raw detections"):
        list(iter_raw(tmp_path))


def test_iter_raw_on_an_empty_folder_says_so(tmp_path):
    with pytest.raises(MissingInput, match=r"no raw-detections files \(\*\.npz\)"):
        next(iter_raw(tmp_path))
    with pytest.raises(MissingInput, match="folder not found"):
        next(iter_raw(tmp_path / "absent"))
