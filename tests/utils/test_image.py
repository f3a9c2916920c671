"""Tests for utils/image.py: BGR reading, Caffe mean, resize scale (§8.4)."""

import numpy as np
import pytest
from PIL import Image

from object_detector_retinanet.keras_retinanet.utils.image import (
    compute_resize_scale,
    preprocess_image,
    read_image_bgr,
    read_image_size,
    resize_image,
)


def test_read_image_bgr_reverses_rgb(tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGB", (3, 2), (255, 10, 0)).save(path)  # PIL size is (W=3, H=2)
    image = read_image_bgr(path)
    assert image.shape == (2, 3, 3) and image.dtype == np.uint8
    assert image[0, 0].tolist() == [0, 10, 255]  # B, G, R


def test_read_image_bgr_converts_grayscale(tmp_path):
    path = tmp_path / "gray.png"
    Image.new("L", (4, 4), 7).save(path)
    assert read_image_bgr(path)[0, 0].tolist() == [7, 7, 7]


def test_read_image_size_is_width_height(tmp_path):
    path = tmp_path / "wide.jpg"
    Image.new("RGB", (30, 20)).save(path)
    assert read_image_size(path) == (30, 20)  # B5: (width, height), not swapped


def test_b25_truncated_jpeg_raises_oserror_naming_file(tmp_path):
    path = tmp_path / "broken.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match="broken.jpg"):
        read_image_bgr(path)


def test_missing_file_raises_oserror_naming_file(tmp_path):
    with pytest.raises(OSError, match="nope.jpg"):
        read_image_bgr(tmp_path / "nope.jpg")


def test_preprocess_image_subtracts_caffe_bgr_mean():
    x = np.full((1, 1, 3), 200, dtype=np.uint8)
    out = preprocess_image(x)
    assert out.dtype == np.float32
    # 200 - 103.939, 200 - 116.779, 200 - 123.68
    np.testing.assert_allclose(out[0, 0], [96.061, 83.221, 76.32], rtol=0, atol=1e-4)
    assert x[0, 0, 0] == 200  # input untouched


@pytest.mark.parametrize(
    "shape, expected",
    [
        ((400, 600), 2.0),  # 800 / 400 = 2, 600 * 2 = 1200 <= 1333
        ((400, 1000), 1333 / 1000),  # 1000 * 2 = 2000 > 1333 -> capped at 1333 / 1000
        ((1000, 400, 3), 1333 / 1000),  # orientation does not matter
        ((2448, 3264, 3), 800 / 2448),  # 3264 * 800 / 2448 = 1066.7 <= 1333 -> not capped
        ((2336, 4160, 3), 1333 / 4160),  # 4160 * 800 / 2336 = 1424.7 > 1333 -> capped
    ],
)
def test_compute_resize_scale(shape, expected):
    assert compute_resize_scale(shape) == pytest.approx(expected)


def test_resize_image_shape_and_scale():
    image = np.zeros((400, 600, 3), dtype=np.float32)
    resized, scale = resize_image(image)
    assert scale == 2.0
    assert resized.shape == (800, 1200, 3) and resized.dtype == np.float32


def test_resize_image_custom_sides():
    image = np.full((40, 100, 3), 5, dtype=np.uint8)
    resized, scale = resize_image(image, min_side=80, max_side=133)
    assert scale == pytest.approx(1.33)  # 100 * 2 = 200 > 133 -> 133 / 100
    assert resized.shape == (53, 133, 3)  # round(40 * 1.33) = 53, round(100 * 1.33) = 133
    assert (resized == 5).all()  # bilinear keeps a constant image constant
