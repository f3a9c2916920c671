"""Tests of the per-image inference loop (§9, §11; B1-B3, B7, B18, B24)."""

from __future__ import annotations

import csv
import os

import cv2
import numpy as np
import pytest

from object_detector_retinanet.keras_retinanet import inference
from object_detector_retinanet.keras_retinanet.inference import (
    mix_scores,
    predict_images,
    raw_detections,
)
from object_detector_retinanet.keras_retinanet.utils.results_csv import RESULTS_HEADER

GREEN = (0, 255, 0)  # BGR, ground truth
RED = (0, 0, 255)  # BGR, detections
BACKGROUND = 128  # grey fake images: neither pure green nor pure red anywhere


def identity_merge(detections, image_shape, config=None):
    """Stand-in for merge_detections that keeps every row."""
    assert len(image_shape) == 2
    return np.asarray(detections)


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def count_color(image, color):
    return int(np.all(image == np.asarray(color, dtype=np.uint8), axis=-1).sum())


# --------------------------------------------------------------------------------------------------
# mix_scores / raw_detections
# --------------------------------------------------------------------------------------------------


def test_mix_scores_weights_hard_and_soft():
    hard = np.array([0.8, 0.2])
    soft = np.array([0.4, 1.0])
    # r = 0.25: 0.25 * 0.8 + 0.75 * 0.4 = 0.2 + 0.3 = 0.5
    #           0.25 * 0.2 + 0.75 * 1.0 = 0.05 + 0.75 = 0.8
    np.testing.assert_allclose(mix_scores(hard, soft, 0.25), [0.5, 0.8])
    np.testing.assert_allclose(mix_scores(hard, soft, 1.0), hard)  # hard only
    np.testing.assert_allclose(mix_scores(hard, soft, 0.0), soft)  # soft only (the paper's setting)


def test_mix_scores_keeps_float32():
    hard = np.array([0.5], dtype=np.float32)
    soft = np.array([0.25], dtype=np.float32)
    assert mix_scores(hard, soft, np.float64(0.5)).dtype == np.float32


def _outputs():
    """Five network rows; the last is -1 padding."""
    boxes = np.array(
        [
            [20.0, 40.0, 61.0, 81.0],
            [0.0, 0.0, 10.0, 10.0],
            [100.0, 100.0, 120.0, 130.0],
            [2.0, 4.0, 6.0, 8.0],
            [-1.0, -1.0, -1.0, -1.0],
        ]
    )
    hard = np.array([0.5, 0.1, 0.9, 0.3, -1.0])
    soft = np.array([[0.9], [0.9], [0.1], [0.5], [-1.0]])
    labels = np.array([0, 0, 0, 0, -1])
    return boxes, hard, soft, labels


def test_raw_detections_scale_threshold_sort():
    boxes, hard, soft, labels = _outputs()
    rows = raw_detections(
        boxes, hard, soft, labels, scale=2.0, score_threshold=0.1, hard_score_rate=0.5
    )
    # confidences (r = 0.5): row0 0.5*0.5+0.5*0.9 = 0.7 ; row2 0.5*0.9+0.5*0.1 = 0.5 ;
    # row3 0.5*0.3+0.5*0.5 = 0.4 ; row1 has hard 0.1, not > 0.1 -> dropped ; row4 padding -> dropped
    assert rows.dtype == np.float64
    assert rows.shape == (3, 7)
    np.testing.assert_allclose(
        rows,
        [
            [10.0, 20.0, 30.5, 40.5, 0.7, 0.5, 0.0],  # [20, 40, 61, 81] / 2
            [50.0, 50.0, 60.0, 65.0, 0.5, 0.9, 0.0],  # [100, 100, 120, 130] / 2
            [1.0, 2.0, 3.0, 4.0, 0.4, 0.3, 0.0],  # [2, 4, 6, 8] / 2
        ],
    )


def test_raw_detections_threshold_is_strict():
    boxes = np.tile([0.0, 0.0, 1.0, 1.0], (3, 1))
    hard = np.array([0.25, 0.2500001, 0.2499999])
    rows = raw_detections(boxes, hard, hard, np.zeros(3), 1.0, score_threshold=0.25)
    np.testing.assert_array_equal(rows[:, 5], [0.2500001])  # 0.25 itself is not > 0.25


def test_raw_detections_drops_padding_at_zero_threshold():
    boxes, hard, soft, labels = _outputs()
    rows = raw_detections(boxes, hard, soft, labels, scale=1.0, score_threshold=0.0)
    # hard > 0 keeps rows 0-3 and drops only the padding row (hard = -1)
    assert rows.shape[0] == 4
    assert not np.any(rows[:, 5] < 0)


def test_raw_detections_top_k_by_confidence_not_hard():
    boxes = np.arange(12, dtype=np.float64).reshape(3, 4)
    hard = np.array([0.9, 0.2, 0.5])
    soft = np.array([0.1, 0.9, 0.9])
    # r = 0: confidence = soft = [0.1, 0.9, 0.9]; ties keep network order (stable) -> rows 1, 2
    rows = raw_detections(
        boxes, hard, soft, np.zeros(3), 1.0, hard_score_rate=0.0, max_detections=2
    )
    np.testing.assert_array_equal(rows[:, 5], [0.2, 0.5])
    np.testing.assert_array_equal(rows[:, :4], boxes[[1, 2]])


def test_raw_detections_empty():
    rows = raw_detections(np.full((2, 4), -1.0), -np.ones(2), -np.ones((2, 1)), -np.ones(2), 1.0)
    assert rows.shape == (0, 7)


def test_b24_multi_class_soft_scores_rejected():
    # Original: np.squeeze(iou, axis=-1) crashed with an opaque error for 5 classes (issue #16).
    with pytest.raises(ValueError, match="single-class model"):
        raw_detections(np.zeros((2, 4)), np.ones(2), np.ones((2, 5)), np.zeros(2), 1.0)


def test_raw_detections_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="hard must have shape"):
        raw_detections(np.zeros((2, 4)), np.ones(3), np.ones(2), np.zeros(2), 1.0)


# --------------------------------------------------------------------------------------------------
# predict_images with a fake generator and network
# --------------------------------------------------------------------------------------------------


class FakeGenerator:
    """Grey images under <root>/images; optional ground truth; optional unreadable indices."""

    label_to_name = staticmethod(lambda label: "object")

    def __init__(self, root, shapes, annotations=None, broken=()):
        self.root = str(root)
        self.shapes = shapes
        self.annotations = annotations
        self.has_ground_truth = annotations is not None
        self.broken = set(broken)
        self.image_names = [f"test_{i}.jpg" for i in range(len(shapes))]

    def size(self):
        return len(self.shapes)

    def image_path(self, i):
        return os.path.join(self.root, "images", self.image_names[i])

    def load_image(self, i):
        if i in self.broken:
            raise OSError(f"cannot read image {self.image_path(i)}: truncated")
        return np.full((*self.shapes[i], 3), BACKGROUND, dtype=np.uint8)

    def load_annotations(self, i):
        if self.annotations is None:
            raise AssertionError("load_annotations called on a generator without ground truth (B7)")
        return self.annotations[i]


class FakeNetwork:
    """Returns fixed outputs per call, records batch shapes and can run a hook before answering."""

    def __init__(self, outputs, hook=None):
        self.outputs = outputs
        self.hook = hook
        self.calls = []

    def __call__(self, batch):
        call = len(self.calls)
        self.calls.append((batch.shape, batch.dtype))
        if self.hook is not None:
            self.hook(call)
        boxes, hard, labels, soft = self.outputs[call]
        return (
            np.asarray(boxes, dtype=np.float32)[None],
            np.asarray(hard, dtype=np.float32)[None],
            np.asarray(labels, dtype=np.int32)[None],
            np.asarray(soft, dtype=np.float32)[None, :, None],
        )


# Scores chosen exactly representable in float32, so the CSV text is exact.
NET_OUTPUTS = [
    (  # image 0 (40 x 60, scale 2 -> input 80 x 120)
        [[20, 40, 61, 81], [100, 10, 118, 30], [0, 0, 4, 4], [-1, -1, -1, -1]],
        [0.875, 0.5, 0.0625, -1],  # hard; 0.0625 is below the 0.1 threshold
        [0, 0, 0, -1],
        [0.625, 0.25, 1.0, -1],  # soft
    ),
    (  # image 1 (50 x 40, scale 2 -> input 100 x 80)
        [[8, 8, 30, 30], [-1, -1, -1, -1]],
        [0.25, -1],
        [0, -1],
        [0.75, -1],
    ),
]


def test_predict_images_writes_exact_rows_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(inference, "merge_detections", identity_merge)
    generator = FakeGenerator(tmp_path / "data", [(40, 60), (50, 40)])
    results = tmp_path / "results" / "out.csv"
    network = FakeNetwork(NET_OUTPUTS)
    returned = predict_images(
        generator, network, results, image_min_side=80, image_max_side=1333, progress=False
    )
    assert returned == str(results)
    # min side 40 -> 80: scale 2; image 1: min side 40 -> 80, so 50 x 40 becomes 100 x 80
    assert network.calls == [((1, 80, 120, 3), np.float32), ((1, 100, 80, 3), np.float32)]
    assert read_rows(results) == [
        list(RESULTS_HEADER),
        # conf = 0.5 * 0.875 + 0.5 * 0.625 = 0.75 ; box [20, 40, 61, 81] / 2 = [10, 20, 30.5, 40.5]
        ["images/test_0.jpg", "10", "20", "30", "40", "0.75", "0.875"],
        # conf = 0.5 * 0.5 + 0.5 * 0.25 = 0.375 ; box [100, 10, 118, 30] / 2 = [50, 5, 59, 15]
        ["images/test_0.jpg", "50", "5", "59", "15", "0.375", "0.5"],
        # conf = 0.5 * 0.25 + 0.5 * 0.75 = 0.5 ; box [8, 8, 30, 30] / 2
        ["images/test_1.jpg", "4", "4", "15", "15", "0.5", "0.25"],
    ]


def test_b18_rows_on_disk_before_next_image(tmp_path, monkeypatch):
    monkeypatch.setattr(inference, "merge_detections", identity_merge)
    results = tmp_path / "out.csv"
    seen = []
    network = FakeNetwork(NET_OUTPUTS, hook=lambda call: seen.append(read_rows(results)))
    predict_images(
        FakeGenerator(tmp_path, [(40, 60), (50, 40)]),
        network,
        results,
        image_min_side=80,
        progress=False,
    )
    assert seen[0] == [list(RESULTS_HEADER)]  # while the network runs image 0: header only
    assert [row[0] for row in seen[1][1:]] == ["images/test_0.jpg"] * 2  # image 0 already flushed


def test_predict_images_passes_original_shape_and_config_to_merger(tmp_path, monkeypatch):
    calls = []

    def recording_merge(detections, image_shape, config=None):
        calls.append((detections.shape, image_shape, config))
        return detections[:1]  # keep only the most confident row

    monkeypatch.setattr(inference, "merge_detections", recording_merge)
    config = object()
    results = predict_images(
        FakeGenerator(tmp_path, [(40, 60), (50, 40)]),
        FakeNetwork(NET_OUTPUTS),
        tmp_path / "out.csv",
        merger_config=config,
        image_min_side=80,
        progress=False,
    )
    # B2: the merger gets the original (height, width), never a path to re-read
    assert calls == [((2, 7), (40, 60), config), ((1, 7), (50, 40), config)]
    assert [row[0] for row in read_rows(results)[1:]] == ["images/test_0.jpg", "images/test_1.jpg"]


def test_predict_images_failing_image_warns_and_continues(tmp_path, monkeypatch):
    monkeypatch.setattr(inference, "merge_detections", identity_merge)
    generator = FakeGenerator(tmp_path, [(40, 60), (40, 60), (50, 40)], broken={1})
    network = FakeNetwork(NET_OUTPUTS)  # called for images 0 and 2 only
    save_dir = tmp_path / "drawn"
    with pytest.warns(RuntimeWarning, match=r"test_1\.jpg"):
        results = predict_images(
            generator,
            network,
            tmp_path / "out.csv",
            save_dir=save_dir,
            image_min_side=80,
            progress=False,
        )
    ids = [row[0] for row in read_rows(results)[1:]]
    assert ids == ["images/test_0.jpg", "images/test_0.jpg", "images/test_2.jpg"]
    assert sorted(os.listdir(save_dir)) == ["0.png", "2.png"]


def _drawing_setup(tmp_path, with_gt):
    # one 100 x 150 image at scale 1 (min side 100): a confident detection on the left, a weak
    # one in the middle, ground truth on the right
    outputs = [
        (
            [[10, 30, 40, 60], [60, 30, 90, 60], [-1, -1, -1, -1]],
            [0.875, 0.5, -1],
            [0, 0, -1],
            [0.625, 0.25, -1],  # confidences 0.75 (drawn) and 0.375 (not drawn)
        )
    ]
    annotations = None
    if with_gt:
        annotations = [{"bboxes": np.array([[110.0, 30.0, 140.0, 60.0]]), "labels": np.array([0])}]
    generator = FakeGenerator(tmp_path, [(100, 150)], annotations=annotations)
    save_dir = tmp_path / "drawn"
    predict_images(
        generator,
        FakeNetwork(outputs),
        tmp_path / "out.csv",
        save_dir=save_dir,
        image_min_side=100,
        progress=False,
    )
    assert os.listdir(save_dir) == ["0.png"]
    return cv2.imread(str(save_dir / "0.png"))


def test_drawing_red_only_above_half_confidence(tmp_path, monkeypatch):
    monkeypatch.setattr(inference, "merge_detections", identity_merge)
    drawn = _drawing_setup(tmp_path, with_gt=False)
    assert drawn.shape == (100, 150, 3)
    assert count_color(drawn[:, :50], RED) > 0  # confidence 0.75 > 0.5: drawn
    assert count_color(drawn[:, 50:100], RED) == 0  # confidence 0.375: not drawn
    assert count_color(drawn, GREEN) == 0


def test_b7_ground_truth_drawn_green_only_when_present(tmp_path, monkeypatch):
    monkeypatch.setattr(inference, "merge_detections", identity_merge)
    with_gt = _drawing_setup(tmp_path / "gt", with_gt=True)
    assert count_color(with_gt[:, 100:], GREEN) > 0
    assert count_color(with_gt[:, :100], GREEN) == 0
    # without GT the generator's load_annotations must not even be called (it raises) -- B7
    without_gt = _drawing_setup(tmp_path / "nogt", with_gt=False)
    assert count_color(without_gt, GREEN) == 0


def test_b3_drawings_go_to_save_dir_and_nothing_else_is_written(tmp_path, monkeypatch):
    # B1/B3: results and drawings land exactly where the arguments say, never under a data root
    monkeypatch.setattr(inference, "merge_detections", identity_merge)
    monkeypatch.setenv("SKU110K_ROOT", str(tmp_path / "root"))
    predict_images(
        FakeGenerator(tmp_path / "data", [(40, 60), (50, 40)]),
        FakeNetwork(NET_OUTPUTS),
        tmp_path / "res" / "out.csv",
        save_dir=tmp_path / "pngs",
        image_min_side=80,
        progress=False,
    )
    assert sorted(os.listdir(tmp_path / "pngs")) == ["0.png", "1.png"]
    assert sorted(os.listdir(tmp_path / "res")) == ["out.csv", "out.csv.done"]
    assert not os.path.exists(tmp_path / "root")


def test_b18_crash_keeps_rows_of_finished_images(tmp_path, monkeypatch):
    monkeypatch.setattr(inference, "merge_detections", identity_merge)
    results = tmp_path / "out.csv"

    def explode(call):
        if call == 1:
            raise RuntimeError("out of memory on image 1")

    with pytest.raises(RuntimeError, match="image 1"):
        predict_images(
            FakeGenerator(tmp_path, [(40, 60), (50, 40)]),
            FakeNetwork(NET_OUTPUTS, hook=explode),
            results,
            image_min_side=80,
            progress=False,
        )
    # the original wrote the CSV only at the end, so this crash left no file at all
    assert [row[0] for row in read_rows(results)[1:]] == ["images/test_0.jpg"] * 2


# --------------------------------------------------------------------------------------------------
# With the real EM-Merger
# --------------------------------------------------------------------------------------------------


def _cluster_outputs(seed, centres, jitter=2.0, per_cluster=6, size=40):
    """Network outputs (scale 1) with `per_cluster` jittered copies of a box at each centre."""
    rng = np.random.default_rng(seed)
    boxes, hard, soft = [], [], []
    for cx, cy in centres:
        for _ in range(per_cluster):
            dx, dy = rng.uniform(-jitter, jitter, 2)
            x1, y1 = cx - size / 2 + dx, cy - size / 2 + dy
            boxes.append([x1, y1, x1 + size, y1 + size])
            hard.append(rng.uniform(0.5, 0.95))
            soft.append(rng.uniform(0.5, 0.95))
    boxes.append([-1, -1, -1, -1])  # padding
    hard.append(-1)
    soft.append(-1)
    return (
        np.round(boxes, 2),
        np.asarray(hard, dtype=np.float32),
        np.zeros(len(hard), dtype=np.int32),
        np.asarray(soft, dtype=np.float32),
    )


def _int_boxes(outputs):
    boxes = np.asarray(outputs[0], dtype=np.float32)  # the fake network's dtype
    return {tuple(int(v) for v in box) for box in boxes[:-1]}


def test_real_merger_one_detection_per_separated_object(tmp_path):
    # two objects 100 px apart, 6 jittered detections each -> the merger keeps one original each
    outputs = [_cluster_outputs(0, [(50, 50), (150, 50)]), _cluster_outputs(1, [(60, 40)])]
    results = predict_images(
        FakeGenerator(tmp_path, [(100, 200), (100, 200)]),
        FakeNetwork(outputs),
        tmp_path / "out.csv",
        image_min_side=100,  # scale 1: original pixels = network pixels
        progress=False,
    )
    rows = read_rows(results)[1:]
    image_ids = ("images/test_0.jpg", "images/test_1.jpg")
    per_image = {image: [r for r in rows if r[0] == image] for image in image_ids}
    assert len(per_image["images/test_0.jpg"]) == 2
    assert len(per_image["images/test_1.jpg"]) == 1
    for index, image in enumerate(image_ids):
        for row in per_image[image]:
            assert tuple(int(v) for v in row[1:5]) in _int_boxes(outputs[index])  # kept originals
    left = [r for r in per_image["images/test_0.jpg"] if int(r[1]) < 100]
    assert len(left) == 1  # one box per object, not two on the same one


def test_overlapped_merge_matches_serial(tmp_path):
    centres = [[(40 + 30 * seed, 50), (140, 60)] for seed in range(3)]
    outputs = [_cluster_outputs(seed, centres[seed], per_cluster=5) for seed in range(3)]

    def run(name, overlap):
        return predict_images(
            FakeGenerator(tmp_path, [(100, 200)] * 3),
            FakeNetwork(outputs),
            tmp_path / f"{name}.csv",
            save_dir=tmp_path / f"{name}_png",
            image_min_side=100,
            progress=False,
            overlap=overlap,
        )

    serial = run("serial", overlap=False)
    pooled = run("pooled", overlap=True)
    assert read_rows(pooled) == read_rows(serial)
    assert len(read_rows(serial)) > 3  # some rows for every image, not a trivially empty file
    for i in range(3):
        a = cv2.imread(str(tmp_path / "serial_png" / f"{i}.png"))
        b = cv2.imread(str(tmp_path / "pooled_png" / f"{i}.png"))
        np.testing.assert_array_equal(a, b)


def test_degenerate_boxes_are_dropped_before_the_merger():
    boxes = np.array([[0, 0, 10, 10], [5, 5, 5, 9], [8, 2, 3, 9], [0, 0, 4, 1]], np.float32)
    hard = np.array([0.9, 0.9, 0.9, 0.9], np.float32)
    rows = raw_detections(boxes, hard, hard, np.zeros(4), scale=1.0)
    # [5,5,5,9] has zero width and [8,2,3,9] is inverted: only rows 0 and 3 remain
    np.testing.assert_array_equal(rows[:, :4], [[0, 0, 10, 10], [0, 0, 4, 1]])


def test_predictor_predict_image_is_one_image_of_the_loop(monkeypatch):
    monkeypatch.setattr(inference, "merge_detections", identity_merge)
    predictor = inference.Predictor(FakeNetwork(NET_OUTPUTS[:1]), image_min_side=80)
    rows = predictor.predict_image(np.full((40, 60, 3), BACKGROUND, dtype=np.uint8))
    # the rows test_predict_images_writes_exact_rows_in_order writes for image 0, before truncation
    np.testing.assert_allclose(
        rows[:, :6], [[10, 20, 30.5, 40.5, 0.75, 0.875], [50, 5, 59, 15, 0.375, 0.5]]
    )


# --------------------------------------------------------------------------------------------------
# Raw detections, batches, shards
# --------------------------------------------------------------------------------------------------


def test_select_detections_keeps_the_soft_scores_of_the_kept_rows():
    boxes, hard, soft, labels = _outputs()
    raw = inference.select_detections(
        boxes, hard, soft, labels, scale=2.0, score_threshold=0.1, image_name="a.jpg"
    )
    np.testing.assert_array_equal(raw.hard, [0.5, 0.9, 0.3])  # confidence order 0.7, 0.5, 0.4
    np.testing.assert_array_equal(raw.soft, [0.9, 0.1, 0.5])
    assert raw.image_name == "a.jpg" and raw.labels.dtype == np.int64
    np.testing.assert_array_equal(
        raw.rows(0.5), raw_detections(boxes, hard, soft, labels, 2.0, score_threshold=0.1)
    )


def test_without_a_soft_score_confidence_is_the_hard_score():
    boxes, hard, _, labels = _outputs()
    raw = inference.select_detections(boxes, hard, None, labels, scale=1.0, hard_score_rate=0.3)
    assert not raw.has_soft
    rows = inference.merger_rows(raw, 0.3)
    np.testing.assert_array_equal(rows[:, 4], [0.9, 0.5, 0.3])
    np.testing.assert_array_equal(rows[:, 4], rows[:, 5])


def test_detect_raw_batches_equal_input_shapes_only():
    outputs = [NET_OUTPUTS[0], NET_OUTPUTS[0], NET_OUTPUTS[1]]

    class BatchNetwork(FakeNetwork):
        def __call__(self, batch):
            self.calls.append(batch.shape)
            answers = [self.outputs[len(self.seen) + i] for i in range(len(batch))]
            self.seen.extend(answers)
            width = max(len(a[1]) for a in answers)

            def pad(values, fill, shape=()):
                return np.stack(
                    [np.concatenate([v, np.full((width - len(v), *shape), fill)]) for v in values]
                )

            return (
                pad([np.asarray(a[0], np.float32) for a in answers], -1, (4,)),
                pad([np.asarray(a[1], np.float32) for a in answers], -1),
                pad([np.asarray(a[2], np.int32) for a in answers], -1),
                pad([np.asarray(a[3], np.float32) for a in answers], -1)[..., None],
            )

    images = [np.full(shape, BACKGROUND, np.uint8) for shape in [(40, 60, 3), (50, 40, 3)]]
    network = BatchNetwork(outputs)
    network.seen = []
    predictor = inference.Predictor(network, image_min_side=80)
    raws = predictor.detect_raw([images[0], images[0], images[1]], ["a", "b", "c"], batch_size=2)
    assert network.calls == [(2, 80, 120, 3), (1, 100, 80, 3)]
    single = inference.Predictor(FakeNetwork(outputs), image_min_side=80)
    for raw, image, name in zip(raws, [images[0], images[0], images[1]], "abc"):
        assert raw.image_name == name and raw.image_shape == image.shape[:2]
        np.testing.assert_array_equal(predictor.rows(raw), single.detect(image))


def test_shards_are_contiguous_disjoint_and_cover_the_list():
    for count in (0, 1, 5, 10, 11):
        for shards in (1, 2, 3, 7):
            parts = [inference.shard_indices(count, i, shards) for i in range(1, shards + 1)]
            assert [i for part in parts for i in part] == list(range(count))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
    with pytest.raises(ValueError, match="shard"):
        inference.shard_indices(10, 0, 3)


def test_run_reports_skipped_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(inference, "merge_detections", identity_merge)
    generator = FakeGenerator(tmp_path, [(40, 60), (40, 60), (50, 40)], broken={1})
    predictor = inference.Predictor(FakeNetwork(NET_OUTPUTS), image_min_side=80)
    with pytest.warns(RuntimeWarning):
        report = predictor.run(generator, tmp_path / "out.csv", progress=False)
    assert (report.images, report.resumed, report.predicted) == (3, 0, 2)
    assert [name for name, _ in report.skipped] == ["test_1.jpg"]
    assert "truncated" in report.skipped[0][1]
    generator.broken = set()  # the file was fixed: --resume predicts it, and only it
    network = FakeNetwork([NET_OUTPUTS[1]])
    report = inference.Predictor(network, image_min_side=80).run(
        generator, tmp_path / "out.csv", progress=False, resume=True
    )
    assert (report.images, report.resumed, report.predicted) == (3, 2, 1)
    assert len(network.calls) == 1
    ids = [row[0] for row in read_rows(tmp_path / "out.csv")[1:]]
    assert ids == ["images/test_0.jpg"] * 2 + ["images/test_2.jpg", "images/test_1.jpg"]
