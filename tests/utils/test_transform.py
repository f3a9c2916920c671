"""Tests for utils/transform.py: affine matrices, warps and box mapping (§8.4)."""

import pickle

import numpy as np
import pytest

from object_detector_retinanet.keras_retinanet.utils.transform import (
    RANDOM_TRANSFORM_RANGES,
    adjust_transform_for_image,
    apply_transform,
    augmenting_transform_generator,
    change_transform_origin,
    default_transform_generator,
    random_transform_generator,
    rotation,
    scaling,
    shear,
    transform_aabb,
    translation,
)


def _apply(matrix, x, y):
    return (matrix @ np.array([x, y, 1.0]))[:2]


def test_elementary_matrices():
    np.testing.assert_allclose(_apply(rotation(np.pi / 2), 1, 0), [0, 1], atol=1e-12)
    np.testing.assert_allclose(_apply(translation((3, -2)), 1, 1), [4, -1])
    np.testing.assert_allclose(_apply(scaling((2, 3)), 1, 1), [2, 3])
    # shear by 30 deg: x' = x - sin(30) y = 1 - 0.5 * 2 = 0, y' = cos(30) y = 0.866 * 2
    np.testing.assert_allclose(_apply(shear(np.pi / 6), 1, 2), [0, np.sqrt(3)], atol=1e-12)


def test_change_transform_origin_fixes_the_centre():
    m = change_transform_origin(rotation(0.3), (5, 7))
    np.testing.assert_allclose(_apply(m, 5, 7), [5, 7], atol=1e-12)


def test_flip_about_image_centre_maps_boxes():
    # image W = 60, H = 40: x' = 60 - x, so box [10, 5, 20, 15] -> [60 - 20, 5, 60 - 10, 15]
    m = adjust_transform_for_image(scaling((-1, 1)), (40, 60, 3))
    np.testing.assert_allclose(transform_aabb(m, [10, 5, 20, 15]), [40, 5, 50, 15])
    boxes = np.array([[10, 5, 20, 15], [0, 0, 60, 40]], dtype=float)
    np.testing.assert_allclose(transform_aabb(m, boxes), [[40, 5, 50, 15], [0, 0, 60, 40]])


def test_relative_translation_scales_by_width_height():
    m = adjust_transform_for_image(translation((0.1, -0.5)), (40, 60))
    np.testing.assert_allclose(_apply(m, 0, 0), [6, -20])  # 0.1 * 60, -0.5 * 40


def test_transform_aabb_of_rotated_box_is_not_clipped():
    # QUIRK: AABB of the 4 corners, no clipping: 90 deg about (0, 0) maps [1,2,3,4] corners
    # (x, y) -> (-y, x): x in [-4, -2], y in [1, 3]
    np.testing.assert_allclose(
        transform_aabb(rotation(np.pi / 2), [1, 2, 3, 4]), [-4, 1, -2, 3], atol=1e-12
    )


def test_apply_transform_flip_pixels_with_replicated_border():
    # column c holds value c; dst(x) = src(W - x) for W = 6 -> dst col 0 = src col 6, outside,
    # replicated from col 5; dst cols 1..5 = src cols 5..1
    image = np.tile(np.arange(6, dtype=np.float32), (3, 1))[:, :, None].repeat(3, axis=2)
    m = adjust_transform_for_image(scaling((-1, 1)), image.shape)
    out = apply_transform(m, image)
    assert out.shape == image.shape and out.dtype == np.float32
    np.testing.assert_allclose(out[0, :, 0], [5, 5, 4, 3, 2, 1])


def test_apply_transform_bilinear_half_pixel_shift():
    image = np.tile(np.array([0, 10, 20, 30], dtype=np.float32), (2, 1))[:, :, None].repeat(3, 2)
    out = apply_transform(translation((0.5, 0)), image)  # dst(x) = src(x - 0.5)
    # x=0 -> src(-0.5): replicate -> 0; x=1 -> (0 + 10) / 2 = 5; x=2 -> 15; x=3 -> 25
    np.testing.assert_allclose(out[0, :, 1], [0, 5, 15, 25], atol=0.01)


def test_default_generator_is_flip_x_only_and_seeded():
    flip = scaling((-1, 1))
    gen = default_transform_generator(seed=3)
    matrices = [next(gen) for _ in range(200)]
    flips = [np.allclose(m, flip) for m in matrices]
    identities = [np.allclose(m, np.eye(3)) for m in matrices]
    assert all(f or i for f, i in zip(flips, identities))
    assert 60 < sum(flips) < 140  # p = 0.5 over 200 draws
    again = default_transform_generator(seed=3)
    np.testing.assert_array_equal(np.stack([next(again) for _ in range(200)]), np.stack(matrices))


def test_random_transform_generator_defaults_change_nothing():
    # fizyr contract: random_transform_generator(flip_x_chance=0.5) is flip-only
    gen = random_transform_generator(seed=0)
    assert all(np.allclose(next(gen), np.eye(3)) for _ in range(20))
    flips = random_transform_generator(seed=0, flip_x_chance=0.5)
    assert all(np.allclose(np.abs(next(flips)), np.eye(3)) for _ in range(20))


def test_augmenting_transform_generator_uses_spec_ranges():
    assert RANDOM_TRANSFORM_RANGES["min_rotation"] == -0.1
    assert RANDOM_TRANSFORM_RANGES["max_scaling"] == (1.1, 1.1)
    gen = augmenting_transform_generator(seed=0)
    assert gen.ranges == RANDOM_TRANSFORM_RANGES
    m = next(gen)
    assert m.shape == (3, 3) and not np.allclose(m, np.eye(3))
    np.testing.assert_allclose(m[2], [0, 0, 1])
    # determinant = +-(cos(shear) * sx * sy): |det| within [cos(0.1) * 0.81, 1.21]
    dets = [abs(np.linalg.det(next(gen))) for _ in range(100)]
    assert min(dets) >= np.cos(0.1) * 0.81 - 1e-9 and max(dets) <= 1.21 + 1e-9


def test_random_transform_generator_override_and_pickle():
    gen = augmenting_transform_generator(seed=1, flip_y_chance=0.0)
    assert gen.ranges["flip_y_chance"] == 0.0 and gen.ranges["max_shear"] == 0.1
    next(gen)
    clone = pickle.loads(pickle.dumps(gen))
    np.testing.assert_array_equal(next(clone), next(gen))


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_apply_identity_keeps_image(dtype):
    image = (np.arange(2 * 3 * 3) % 200).astype(dtype).reshape(2, 3, 3)
    np.testing.assert_array_equal(apply_transform(np.eye(3), image), image)
