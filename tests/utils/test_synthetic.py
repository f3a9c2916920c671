"""Tests of the synthetic packed-shelf generator (utils/synthetic.py) and its CLI (bin/synth.py)."""

import math
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from object_detector_retinanet.keras_retinanet.bin import synth
from object_detector_retinanet.keras_retinanet.utils import synthetic

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEEDS = range(8)


def _shelves(boxes):
    """{baseline y2: boxes of that shelf sorted by x1}."""
    return {
        int(y2): boxes[boxes[:, 3] == y2][np.argsort(boxes[boxes[:, 3] == y2][:, 0])]
        for y2 in np.unique(boxes[:, 3])
    }


def _intersections(boxes):
    """(N, N) pairwise intersection areas with the diagonal zeroed."""
    b = boxes.astype(np.int64)
    iw = np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0])
    ih = np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    np.fill_diagonal(inter, 0)
    return inter


def _read_csv(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").split(",") for line in f]


# ------------------------------------------------------------------------------------------------
# Layout
# ------------------------------------------------------------------------------------------------


def test_default_object_sizes_at_reference_size():
    # The reference size itself: factor (320 / 320) ** 0.68 = 1 -> the 28-64 px of the brief.
    assert synthetic.default_object_sizes(320, 320) == pytest.approx((28.0, 64.0))
    # 4x the side: factor 4 ** 0.68 = 2.569... < 4, so larger images hold more products.
    lo, hi = synthetic.default_object_sizes(1280, 1280)
    assert lo == pytest.approx(28.0 * 4**0.68) and hi == pytest.approx(64.0 * 4**0.68)


@pytest.mark.parametrize("height,width", [(320, 320), (256, 256), (240, 400), (480, 200)])
def test_layout_boxes_are_integer_and_strictly_inside(height, width):
    for seed in SEEDS:
        boxes = synthetic.make_layout(np.random.default_rng(seed), height, width)
        assert boxes.dtype == np.int64 and boxes.ndim == 2 and boxes.shape[1] == 4
        assert len(boxes) > 0
        x1, y1, x2, y2 = boxes.T
        # Strictly inside (x2 < W, y2 < H), so the SKU-110K reader never clamps them (§8.1).
        assert (x1 >= 0).all() and (y1 >= 0).all()
        assert (x2 < width).all() and (y2 < height).all()
        assert (x2 > x1).all() and (y2 > y1).all()


def test_layout_products_never_overlap():
    for seed in SEEDS:
        boxes = synthetic.make_layout(np.random.default_rng(seed), 320, 320)
        # Touching is allowed (shared edge, intersection area 0); any overlap is not: IoU == 0.
        assert _intersections(boxes).max() == 0


def test_layout_products_touch_their_neighbours():
    gaps = []
    for seed in SEEDS:
        boxes = synthetic.make_layout(np.random.default_rng(seed), 320, 320)
        for row in _shelves(boxes).values():
            gaps.extend((row[1:, 0] - row[:-1, 2]).tolist())
    gaps = np.array(gaps)
    assert (gaps >= 0).all()
    # Only the occasional empty slot (gap_prob 0.05) separates neighbours: most share an edge.
    assert (gaps == 0).mean() >= 0.75
    # ...but gaps do occur somewhere in 8 images of ~35 products.
    assert (gaps > 0).any()


def test_layout_without_gaps_is_fully_packed():
    for seed in SEEDS:
        boxes = synthetic.make_layout(np.random.default_rng(seed), 320, 320, gap_prob=0.0)
        for row in _shelves(boxes).values():
            assert (row[1:, 0] == row[:-1, 2]).all()


def test_layout_shelves_are_horizontal_bands_with_varied_sizes():
    heights_vary = widths_vary = 0
    for seed in SEEDS:
        boxes = synthetic.make_layout(np.random.default_rng(seed), 320, 320)
        shelves = _shelves(boxes)
        assert len(shelves) >= 2
        baselines = sorted(shelves)
        for upper, lower in zip(baselines, baselines[1:]):
            # The shelf below starts under the board of the shelf above: bands do not interleave.
            assert shelves[lower][:, 1].min() > upper
        for row in shelves.values():
            heights_vary += len(np.unique(row[:, 3] - row[:, 1])) > 1
            widths_vary += len(np.unique(row[:, 2] - row[:, 0])) > 1
    # Several brands of different sizes per shelf, on most shelves.
    assert heights_vary >= 8 and widths_vary >= 8


def test_layout_default_sizes_and_counts():
    counts = []
    for seed in range(20):
        boxes = synthetic.make_layout(np.random.default_rng(seed), 320, 320)
        size = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        assert size.min() >= 28.0 and size.max() <= 64.0
        counts.append(len(boxes))
    assert 20 <= min(counts) and max(counts) <= 60


def test_layout_respects_requested_size_range():
    for seed in SEEDS:
        boxes = synthetic.make_layout(
            np.random.default_rng(seed), 240, 400, min_object_size=20, max_object_size=30
        )
        size = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        assert size.min() >= 20.0 and size.max() <= 30.0
        # A 240x400 image full of ~25 px products holds far more than 60.
        assert len(boxes) > 60


def test_layout_photo_size_holds_about_150_products():
    counts = [len(synthetic.make_layout(np.random.default_rng(s), 3264, 2448)) for s in range(3)]
    assert 100 <= np.median(counts) <= 200


def test_layout_rejects_bad_sizes():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="min_object_size"):
        synthetic.make_layout(rng, 320, 320, min_object_size=50, max_object_size=40)
    with pytest.raises(ValueError, match="too large"):
        synthetic.make_layout(rng, 64, 64, min_object_size=40, max_object_size=50)
    with pytest.raises(ValueError, match="image size"):
        synthetic.make_layout(rng, 8, 320)
    with pytest.raises(ValueError, match="gap_prob"):
        synthetic.make_layout(rng, 320, 320, gap_prob=1.0)


# ------------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------------


def test_render_scene_is_deterministic_by_seed():
    image_a, boxes_a = synthetic.render_scene(np.random.default_rng(5), 200, 240)
    image_b, boxes_b = synthetic.render_scene(np.random.default_rng(5), 200, 240)
    image_c, boxes_c = synthetic.render_scene(np.random.default_rng(6), 200, 240)
    assert image_a.dtype == np.uint8 and image_a.shape == (200, 240, 3)
    np.testing.assert_array_equal(image_a, image_b)
    np.testing.assert_array_equal(boxes_a, boxes_b)
    assert not np.array_equal(image_a, image_c)
    assert not np.array_equal(boxes_a, boxes_c)


def test_render_scene_uses_given_boxes():
    boxes = np.array([[10, 20, 40, 70], [40, 20, 70, 70], [10, 90, 60, 120]])
    image, out = synthetic.render_scene(np.random.default_rng(0), 128, 128, boxes=boxes)
    assert image.shape == (128, 128, 3)
    np.testing.assert_array_equal(out, boxes)
    with pytest.raises(ValueError, match="box 1"):
        # x2 == width is outside: the last column is width - 1.
        synthetic.render_scene(0, 128, 128, boxes=np.array([[0, 0, 10, 10], [100, 0, 128, 10]]))


def test_render_scene_products_are_textured_and_neighbours_look_alike():
    stds, same, shifted = [], [], []
    for seed in range(4):
        image, boxes = synthetic.render_scene(np.random.default_rng(seed), 320, 320)
        image = image.astype(np.float32)
        for a, b in zip(boxes[:-1], boxes[1:]):
            x1, y1, x2, y2 = a
            crop = image[y1:y2, x1:x2]
            stds.append(crop.std())
            touching_twin = b[3] == y2 and b[0] == x2 and (b[2:] - b[:2] == a[2:] - a[:2]).all()
            if touching_twin:
                # Two facings of one brand: nearly the same picture...
                same.append(np.abs(crop - image[b[1] : b[3], b[0] : b[2]]).mean())
                # ...whereas a window straddling their boundary does not match either.
                half = (x2 - x1) // 2
                shifted.append(np.abs(crop - image[y1:y2, x1 + half : x2 + half]).mean())
    # Not flat coloured squares: labels, stripes and shading give every product contrast.
    assert np.percentile(stds, 5) > 10
    assert len(same) > 50
    assert np.median(same) < 0.6 * np.median(shifted)


# ------------------------------------------------------------------------------------------------
# Dataset writer and CLI
# ------------------------------------------------------------------------------------------------


def _write(out_dir, **kwargs):
    args = {"counts": {"train": 2, "val": 1, "test": 1}, "height": 128, "width": 160, "seed": 0}
    args.update(kwargs)
    return synthetic.write_dataset(out_dir, **args)


def _files(out_dir):
    found = {}
    for folder, _, names in os.walk(out_dir):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, out_dir)] = f.read()
    return found


def test_write_dataset_is_deterministic_by_seed(tmp_path):
    _write(tmp_path / "a", seed=7)
    _write(tmp_path / "b", seed=7)
    _write(tmp_path / "c", seed=8)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert sorted(a) == sorted(b) == sorted(c)
    assert a == b  # byte-identical CSVs and JPEGs
    train_csv = os.path.join("annotations", "annotations_train.csv")
    assert a[train_csv] != c[train_csv]
    assert a[os.path.join("images", "test_0.jpg")] != c[os.path.join("images", "test_0.jpg")]


def test_write_dataset_splits_have_independent_seeds(tmp_path):
    _write(tmp_path / "small", counts={"train": 1, "test": 2})
    _write(tmp_path / "large", counts={"train": 4, "test": 2})
    small, large = _files(tmp_path / "small"), _files(tmp_path / "large")
    for name in (
        os.path.join("annotations", "annotations_test.csv"),
        os.path.join("images", "test_0.jpg"),
        os.path.join("images", "test_1.jpg"),
        os.path.join("images", "train_0.jpg"),
    ):
        assert small[name] == large[name], name


def test_write_dataset_csv_is_valid_sku110k(tmp_path):
    summary = _write(tmp_path)
    images_dir = tmp_path / "images"
    expected = ["test_0.jpg", "train_0.jpg", "train_1.jpg", "val_0.jpg"]
    assert sorted(os.listdir(images_dir)) == expected
    assert (tmp_path / "class_mappings.csv").read_text() == "object,0\n"
    for split, n_images in (("train", 2), ("val", 1), ("test", 1)):
        csv_path = tmp_path / "annotations" / f"annotations_{split}.csv"
        assert summary["splits"][split]["annotations"] == str(csv_path)
        rows = _read_csv(csv_path)
        assert len(rows) == summary["splits"][split]["boxes"] > 0
        by_image = {}
        for row in rows:
            assert len(row) == 8
            name, x1, y1, x2, y2, cls, width, height = row
            assert cls == "object"
            x1, y1, x2, y2, width, height = (int(v) for v in (x1, y1, x2, y2, width, height))
            assert (width, height) == (160, 128)
            assert 0 <= x1 < x2 < width and 0 <= y1 < y2 < height
            by_image.setdefault(name, []).append((x1, y1, x2, y2))
        assert sorted(by_image) == [f"{split}_{i}.jpg" for i in range(n_images)]
        for name, boxes in by_image.items():
            image = cv2.imread(str(images_dir / name))
            assert image.shape == (128, 160, 3)
            assert _intersections(np.array(boxes)).max() == 0


def test_write_dataset_rows_survive_the_sku110k_reader(tmp_path):
    csv_generator = pytest.importorskip(
        "object_detector_retinanet.keras_retinanet.preprocessing.csv_generator"
    )
    _write(tmp_path, counts={"train": 2})
    classes = csv_generator.read_classes(str(tmp_path / "class_mappings.csv"))
    parsed = csv_generator.parse_annotations(
        str(tmp_path / "annotations" / "annotations_train.csv"), classes
    )
    rows = _read_csv(tmp_path / "annotations" / "annotations_train.csv")
    assert sum(len(a["bboxes"]) for a in parsed.values()) == len(rows)
    for key, annotations in parsed.items():
        name = os.path.basename(key)
        expected = [[int(v) for v in r[1:5]] for r in rows if r[0] == name]
        # Nothing clamped or dropped.
        np.testing.assert_array_equal(annotations["bboxes"], np.array(expected, dtype=np.float64))


def test_write_dataset_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="split names"):
        synthetic.write_dataset(tmp_path, counts={"../x": 1})
    with pytest.raises(ValueError, match="non-negative"):
        synthetic.write_dataset(tmp_path, counts={"train": -1})
    with pytest.raises(ValueError, match="seed"):
        synthetic.write_dataset(tmp_path, counts={"train": 1}, seed=-1)
    with pytest.raises(ValueError, match="jpeg_quality"):
        synthetic.write_dataset(tmp_path, counts={"train": 1}, jpeg_quality=0)
    assert not os.path.exists(tmp_path / "images")  # nothing written before the checks pass


def test_main_writes_the_dataset(tmp_path, capsys):
    out = tmp_path / "synth"
    argv = ["--out", str(out), "--train", "2", "--val", "0", "--test", "1", "--height", "96"]
    argv += ["--width", "128", "--seed", "3", "--min-size", "16", "--max-size", "30"]
    summary = synth.main(argv)
    assert sorted(os.listdir(out / "images")) == ["test_0.jpg", "train_0.jpg", "train_1.jpg"]
    assert sorted(os.listdir(out / "annotations")) == [
        "annotations_test.csv",
        "annotations_train.csv",
        "annotations_val.csv",
    ]
    assert (out / "annotations" / "annotations_val.csv").read_text() == ""
    rows = _read_csv(out / "annotations" / "annotations_train.csv")
    assert len(rows) == summary["splits"]["train"]["boxes"]
    sizes = [math.sqrt((int(r[3]) - int(r[1])) * (int(r[4]) - int(r[2]))) for r in rows]
    assert 16 <= min(sizes) and max(sizes) <= 30
    printed = capsys.readouterr().out
    assert str(out) in printed
    assert f"{len(rows)} boxes" in printed


def test_main_rejects_negative_counts(tmp_path):
    with pytest.raises(SystemExit):
        synth.main(["--out", str(tmp_path), "--train", "-1"])


def test_main_reports_an_unusable_size_range_in_one_line(tmp_path, capsys):
    # 40x40 allows products up to half the shorter side, 20 px: a 30 px minimum cannot be drawn.
    argv = ["--out", str(tmp_path), "--height", "40", "--width", "40", "--min-size", "30"]
    with pytest.raises(SystemExit) as info:
        synth.main(argv + ["--max-size", "35"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        "error: min_object_size 30.0 is too large for a 40x40 image "
        "(at most half the shorter side, 20.0)"
    )
    assert "Traceback" not in err


def test_synth_runs_as_a_script(tmp_path):
    script = os.path.join(
        REPO_ROOT, "object_detector_retinanet", "keras_retinanet", "bin", "synth.py"
    )
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    cmd = [sys.executable, script, "--out", str(tmp_path), "--train", "1", "--val", "0"]
    cmd += ["--test", "0", "--height", "64", "--width", "64"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "images" / "train_0.jpg").is_file()
    assert "Wrote synthetic SKU-110K dataset" in result.stdout
