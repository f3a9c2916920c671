"""Tests for the shared Generator (§6.2, §6.3, §8.4; B5, B25)."""

import pickle
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from object_detector_retinanet.keras_retinanet import config
from object_detector_retinanet.keras_retinanet.preprocessing.generator import (
    Generator,
    filter_annotations,
)
from object_detector_retinanet.keras_retinanet.utils.anchors import (
    anchors_for_shape,
    stage1_targets,
    stage2_targets,
)
from object_detector_retinanet.keras_retinanet.utils.transform import scaling


class MemoryGenerator(Generator):
    """Images and boxes held in memory; indices in ``broken`` raise OSError like a bad JPEG."""

    def __init__(self, images, boxes, broken=(), **kwargs):
        self.images = images
        self.boxes = boxes
        self.broken = set(broken)
        kwargs.setdefault("image_min_side", 40)
        kwargs.setdefault("image_max_side", 100)
        super().__init__(**kwargs)

    def size(self):
        return len(self.images)

    def num_classes(self):
        return 1

    def load_image(self, i):
        if i in self.broken:
            raise OSError(f"cannot read image img{i}.jpg: image file is truncated")
        return self.images[i].copy()

    def load_annotations(self, i):
        boxes = np.array(self.boxes[i], dtype=np.float64).reshape(-1, 4)
        return {"bboxes": boxes, "labels": np.zeros(len(boxes), np.int64)}

    def image_aspect_ratio(self, i):
        return self.images[i].shape[1] / self.images[i].shape[0]

    def image_path(self, i):
        return f"img{i}.jpg"


def stub_targets(anchors, image_group, annotations_group, num_classes):
    """Records its inputs; returns one array so shapes can be checked."""
    stub_targets.calls.append(
        (
            anchors.shape,
            [im.shape for im in image_group],
            [a["bboxes"].copy() for a in annotations_group],
            num_classes,
        )
    )
    return {"n_boxes": np.array([len(a["bboxes"]) for a in annotations_group], np.float32)}


stub_targets.calls = []


def _uniform(h, w, bgr=(10, 20, 30)):
    return np.tile(np.array(bgr, np.uint8), (h, w, 1))


class FixedTransform:
    """Always yields the same matrix (a deterministic stand-in for a random generator)."""

    def __init__(self, matrix):
        self.matrix = matrix

    def __next__(self):
        return self.matrix


def test_batch_shapes_padding_and_mean_subtraction():
    # min_side 40, max_side 100: 40x40 -> scale 40 / 40 = 1; 20x40 (H x W) -> 40 / 20 = 2 -> 40x80
    images = [_uniform(40, 40), _uniform(20, 40, (200, 100, 50))]
    gen = MemoryGenerator(
        images,
        [[1, 2, 3, 4], [2, 2, 10, 6]],
        batch_size=2,
        group_method="none",
        shuffle_groups=False,
        targets_fn=stub_targets,
    )
    stub_targets.calls.clear()
    inputs, targets = gen[0]
    assert len(gen) == 1
    assert inputs.shape == (2, 40, 80, 3) and inputs.dtype == np.float32
    # image 0: 10 - 103.939, 20 - 116.779, 30 - 123.68 inside, zero padding right of x = 40
    np.testing.assert_allclose(inputs[0, 0, 0], [-93.939, -96.779, -93.68], atol=1e-4)
    assert (inputs[0, :, 40:] == 0).all()
    np.testing.assert_allclose(inputs[1, 39, 79], [96.061, -16.779, -73.68], atol=1e-3)
    anchors_shape, image_shapes, boxes, num_classes = stub_targets.calls[-1]
    assert anchors_shape == anchors_for_shape((40, 80, 3)).shape  # padded batch shape
    assert image_shapes == [(40, 40, 3), (40, 80, 3)]  # un-padded images to targets_fn
    np.testing.assert_allclose(boxes[1], [[4, 4, 20, 12]])  # [2, 2, 10, 6] * 2
    assert num_classes == 1 and targets["n_boxes"].tolist() == [1, 1]


@pytest.mark.parametrize(
    "shape, expected_shape, expected_scale",
    [
        ((40, 60), (80, 120), 2.0),  # 80 / 40 = 2, 60 * 2 = 120 <= 133
        ((40, 100), (53, 133), 1.33),  # 100 * 2 = 200 > 133 -> 133 / 100
    ],
)
def test_resize_scale_applies_to_boxes(shape, expected_shape, expected_scale):
    gen = MemoryGenerator(
        [_uniform(*shape)],
        [[10, 10, 20, 20]],
        image_min_side=80,
        image_max_side=133,
        shuffle_groups=False,
        targets_fn=stub_targets,
    )
    stub_targets.calls.clear()
    inputs, _ = gen[0]
    assert inputs.shape[1:3] == expected_shape
    expected_boxes = np.array([[10, 10, 20, 20]]) * expected_scale
    np.testing.assert_allclose(stub_targets.calls[-1][2][0], expected_boxes)


def test_flip_moves_boxes_and_pixels():
    # W = 60: x' = 60 - x, so [10, 5, 20, 15] -> [40, 5, 50, 15]; min_side 40 keeps scale 1
    image = _uniform(40, 60)
    image[:, :30] = 0  # left half black, right half (10, 20, 30)
    gen = MemoryGenerator(
        [image],
        [[10, 5, 20, 15]],
        image_max_side=60,
        shuffle_groups=False,
        targets_fn=stub_targets,
        transform_generator=FixedTransform(scaling((-1, 1))),
    )
    stub_targets.calls.clear()
    inputs, _ = gen[0]
    np.testing.assert_allclose(stub_targets.calls[-1][2][0], [[40, 5, 50, 15]])
    # after flipping, the right half is black (mean-subtracted: -103.939) and the left is not
    np.testing.assert_allclose(inputs[0, 0, 45], [-103.939, -116.779, -123.68], atol=1e-3)
    np.testing.assert_allclose(inputs[0, 0, 10], [-93.939, -96.779, -93.68], atol=1e-3)


def test_filter_annotations_warns_and_drops():
    image = np.zeros((10, 20, 3), np.uint8)
    annotations = {
        "bboxes": np.array(
            [
                [0, 0, 20, 10],
                [5, 5, 5, 8],
                [-1, 0, 3, 3],
                [0, 0, 21, 3],
                [0, 0, 3, 11],
                [2, 2, 4, 4],
            ],
            np.float64,
        ),
        "labels": np.arange(6),
    }
    with pytest.warns(UserWarning, match=r"Image a.jpg .* contains 4 invalid boxes"):
        kept = filter_annotations(image, annotations, "a.jpg")
    assert kept["labels"].tolist() == [0, 5]


def test_filter_annotations_in_generator_names_file():
    gen = MemoryGenerator(
        [_uniform(40, 40)], [[0, 0, 50, 10]], shuffle_groups=False, targets_fn=stub_targets
    )
    with pytest.warns(UserWarning, match="img0.jpg"):
        gen[0]


def test_ratio_grouping_and_wraparound():
    # aspect ratios (W / H): 2.0, 0.5, 1.0 -> order 1, 2, 0; batch 2 wraps to index 1
    images = [_uniform(20, 40), _uniform(40, 20), _uniform(30, 30)]
    gen = MemoryGenerator(images, [[]] * 3, batch_size=2, shuffle_groups=False)
    assert gen.groups == [[1, 2], [0, 1]]


def test_seeded_shuffle_is_deterministic_and_changes_per_epoch():
    images = [_uniform(8, 8 + i) for i in range(20)]

    def make():
        return MemoryGenerator(images, [[]] * 20, group_method="none", seed=7)

    a, b = make(), make()
    assert a.groups == b.groups
    assert sorted(g[0] for g in a.groups) == list(range(20))
    first = list(a.groups)
    a.on_epoch_end()
    b.on_epoch_end()
    assert a.groups == b.groups and a.groups != first
    assert make().groups != MemoryGenerator(images, [[]] * 20, group_method="none", seed=8).groups


def test_b25_unreadable_image_replaced_by_next_good_one():
    images = [_uniform(40, 40), _uniform(40, 50), _uniform(40, 60)]
    gen = MemoryGenerator(images, [[]] * 3, broken={1}, group_method="none", shuffle_groups=False)
    with pytest.warns(UserWarning, match="skipping unreadable image img1.jpg: .*truncated"):
        batch = gen[1]
    assert batch.shape == (1, 40, 60, 3)  # image 2 took image 1's place
    assert gen.bad_indices == {1}


def test_b25_all_images_unreadable_raises():
    gen = MemoryGenerator([_uniform(8, 8)] * 2, [[]] * 2, broken={0, 1}, shuffle_groups=False)
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="none of the 2 images"):
        gen[0]


def test_threads_and_pickle_give_the_same_batches():
    images = [_uniform(30 + i, 40) for i in range(6)]
    gen = MemoryGenerator(
        images, [[1, 1, 5, 5]] * 6, batch_size=2, seed=0, workers=2, use_multiprocessing=False
    )
    assert gen.workers == 2 and gen.use_multiprocessing is False
    sequential = [gen[i] for i in range(len(gen))]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(gen.__getitem__, list(range(len(gen))) * 3))
    for i, batch in enumerate(threaded):
        np.testing.assert_array_equal(batch, sequential[i % len(gen)])
    clone = pickle.loads(pickle.dumps(gen))
    np.testing.assert_array_equal(clone[0], sequential[0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="group_method"):
        MemoryGenerator([_uniform(8, 8)], [[]], group_method="size")
    with pytest.raises(IndexError):
        MemoryGenerator([_uniform(8, 8)], [[]])[1]


# --- with the real targets functions of utils/anchors.py (§6.2, §6.3) ---


def _real_generator(targets_fn):
    # 64x64 and 64x48 images, min_side 64 -> scale 1 for the first, 64/48 for the second
    images = [_uniform(64, 64), _uniform(48, 64)]
    boxes = [[[0, 0, 32, 32], [40, 8, 60, 40]], [[0, 0, 24, 24]]]
    return MemoryGenerator(
        images,
        boxes,
        batch_size=2,
        group_method="none",
        shuffle_groups=False,
        image_min_side=64,
        image_max_side=128,
        targets_fn=targets_fn,
    )


def test_stage1_targets_batch_shapes():
    inputs, targets = _real_generator(stage1_targets)[0]
    # image 2: scale 64 / 48 -> 64 x 85 (round(85.33)); padded batch (64, 85)
    assert inputs.shape == (2, 64, 85, 3)
    n = len(anchors_for_shape((64, 85)))
    regression = targets[config.REGRESSION]
    labels = targets[config.CLASSIFICATION]
    assert regression.shape == (2, n, 5) and regression.dtype == np.float32
    assert labels.shape == (2, n, 1) and labels.dtype == np.float32
    assert set(np.unique(regression[..., 4])) <= {-1.0, 0.0, 1.0}
    assert (regression[..., 4] == 1).any(axis=1).all()  # both images have a positive anchor


def test_stage2_targets_are_absolute_boxes():
    _, targets = _real_generator(stage2_targets)[0]
    out = targets[config.IOU_REGRESSION_OUTPUT]
    assert out.shape == (2, len(anchors_for_shape((64, 85))), 5) and out.dtype == np.float32
    # positives carry the matched GT box in the resized frame: image 2's box * 64 / 48 = 32
    positives0 = out[0][out[0, :, 4] == 1, :4]
    positives1 = out[1][out[1, :, 4] == 1, :4]
    assert len(positives0) and len(positives1)
    expected0 = {(0.0, 0.0, 32.0, 32.0), (40.0, 8.0, 60.0, 40.0)}
    assert {tuple(row) for row in positives0.tolist()} <= expected0
    np.testing.assert_allclose(positives1, np.tile([0, 0, 32, 32], (len(positives1), 1)), atol=1e-4)


def test_no_warnings_on_clean_data():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _real_generator(stage1_targets)[0]
