"""Image reading, Caffe preprocessing and resizing (§8.4 steps 1, 3 and 5).

The original feeds the network BGR images with the Caffe ImageNet mean subtracted (no std scaling),
resized so the shorter side is 800 px unless the longer side would then exceed 1333 px
(Lin et al. 2017, as used by Goldman et al., CVPR 2019). NumPy/OpenCV/Pillow only.

Corrupt or truncated files (B25) raise :class:`OSError` naming the file; the generator decides what
to do with them. PIL's global ``ImageFile.LOAD_TRUNCATED_IMAGES`` is deliberately left alone.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
from PIL import Image

from object_detector_retinanet.keras_retinanet.config import CAFFE_BGR_MEAN, TrainConfig
from object_detector_retinanet.keras_retinanet.errors import UnreadableImage

_TRAIN = TrainConfig()


def read_image_bgr(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as BGR, the way the original does (PIL -> RGB -> BGR).

    Args:
        path: image file.

    Returns:
        uint8 array (H, W, 3), channels B, G, R.

    Raises:
        UnreadableImage (an OSError): the file is missing, not an image, truncated or otherwise
            undecodable (B25); the message names the file.
    """
    path = os.fspath(path)
    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
    except OSError as error:  # includes FileNotFoundError, UnidentifiedImageError, truncation
        raise UnreadableImage(f"cannot read image {path}: {error}") from error
    except (ValueError, SyntaxError, Image.DecompressionBombError) as error:  # odd PIL decoders
        raise UnreadableImage(f"cannot read image {path}: {error}") from error
    return np.ascontiguousarray(rgb[:, :, ::-1])


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """Width and height of an image from its header only (B5: ``(width, height)``, in that order).

    Raises:
        UnreadableImage (an OSError): the header cannot be read; the message names the file.
    """
    path = os.fspath(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, ValueError, SyntaxError) as error:
        raise UnreadableImage(f"cannot read image header {path}: {error}") from error
    return int(width), int(height)


def preprocess_image(x: np.ndarray) -> np.ndarray:
    """Caffe-style mean subtraction on a BGR image: B -103.939, G -116.779, R -123.68; no scaling.

    Args:
        x: (H, W, 3) BGR image, any numeric dtype.

    Returns:
        float32 (H, W, 3), a new array.
    """
    out = np.array(x, dtype=np.float32, copy=True)
    out -= np.asarray(CAFFE_BGR_MEAN, dtype=np.float32)
    return out


def compute_resize_scale(
    image_shape: tuple[int, ...],
    min_side: int = _TRAIN.image_min_side,
    max_side: int = _TRAIN.image_max_side,
) -> float:
    """Scale that makes the shorter side ``min_side`` unless the longer one would pass ``max_side``.

    Args:
        image_shape: (H, W) or (H, W, C).
        min_side: target of the shorter side (800).
        max_side: cap of the longer side (1333).

    Returns:
        ``min_side / min(H, W)``, or ``max_side / max(H, W)`` when that would be exceeded.
    """
    rows, cols = image_shape[:2]
    smallest, largest = min(rows, cols), max(rows, cols)
    scale = min_side / smallest
    if largest * scale > max_side:
        scale = max_side / largest
    return float(scale)


def resize_image(
    img: np.ndarray,
    min_side: int = _TRAIN.image_min_side,
    max_side: int = _TRAIN.image_max_side,
) -> tuple[np.ndarray, float]:
    """Resize with ``cv2.resize`` (bilinear) by :func:`compute_resize_scale`.

    The output size is OpenCV's rounding of ``(W * scale, H * scale)``.

    Returns:
        (resized image, scale); boxes must be multiplied by the same scale.
    """
    scale = compute_resize_scale(img.shape, min_side=min_side, max_side=max_side)
    resized = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    return resized, scale
