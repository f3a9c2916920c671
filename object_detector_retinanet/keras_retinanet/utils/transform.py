"""Random affine augmentation: 3x3 homogeneous matrices, their application and box mapping (§8.4).

The training generator of the original (fizyr/keras-retinanet lineage) draws one affine matrix per
image, composed as ``rotation . translation . shear . scaling . flip`` about the image centre, warps
the (already mean-subtracted) image with ``cv2.warpAffine`` (bilinear, border replicate, same output
size) and replaces each box by the axis-aligned bounding box of its four transformed corners.

- Without ``--random-transform`` the original still flips horizontally with p = 0.5
  (:func:`default_transform_generator`; KEEP).
- With ``--random-transform`` it draws rotation, translation, shear and scaling in the ranges
  of §8.4 plus x and y flips (:func:`augmenting_transform_generator`, i.e.
  :func:`random_transform_generator` with :data:`RANDOM_TRANSFORM_RANGES`).

:func:`random_transform_generator` keeps fizyr's contract: every range defaults to "no change", so
``random_transform_generator(flip_x_chance=0.5)`` is flip-only.

A matrix maps input pixel coordinates ``(x, y, 1)`` to output coordinates. The generators are
picklable iterator objects with their own ``numpy.random.RandomState`` (so they can travel to
``PyDataset`` worker processes); they are not thread-safe, the caller serialises ``next()``.
NumPy/OpenCV only.
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

from object_detector_retinanet.keras_retinanet.config import TrainConfig

# §8.4, `--random-transform` ranges
RANDOM_TRANSFORM_RANGES = {
    "min_rotation": -0.1,  # radians
    "max_rotation": 0.1,
    "min_translation": (-0.1, -0.1),  # fraction of (W, H) (relative translation)
    "max_translation": (0.1, 0.1),
    "min_shear": -0.1,  # radians
    "max_shear": 0.1,
    "min_scaling": (0.9, 0.9),  # independent x and y factors
    "max_scaling": (1.1, 1.1),
    "flip_x_chance": 0.5,
    "flip_y_chance": 0.5,
}


def rotation(angle: float) -> np.ndarray:
    """Rotation by ``angle`` radians about the origin (on screen, y pointing down: clockwise)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def translation(offset: tuple[float, float] | np.ndarray) -> np.ndarray:
    """Translation by ``(tx, ty)``."""
    return np.array([[1.0, 0.0, offset[0]], [0.0, 1.0, offset[1]], [0.0, 0.0, 1.0]])


def shear(angle: float) -> np.ndarray:
    """Shear: the y axis is tilted by ``angle`` (x' = x - sin(a) y, y' = cos(a) y)."""
    return np.array([[1.0, -np.sin(angle), 0.0], [0.0, np.cos(angle), 0.0], [0.0, 0.0, 1.0]])


def scaling(factor: tuple[float, float] | np.ndarray) -> np.ndarray:
    """Independent scaling of x and y by ``(fx, fy)`` (negative factors mirror)."""
    return np.array([[factor[0], 0.0, 0.0], [0.0, factor[1], 0.0], [0.0, 0.0, 1.0]])


def change_transform_origin(transform: np.ndarray, center: tuple[float, float]) -> np.ndarray:
    """Make ``transform`` act about ``center`` instead of the origin: T(c) . M . T(-c)."""
    center = np.asarray(center, dtype=np.float64)
    return translation(center) @ transform @ translation(-center)


def random_transform(
    prng: np.random.RandomState,
    min_rotation: float = 0.0,
    max_rotation: float = 0.0,
    min_translation: tuple[float, float] = (0.0, 0.0),
    max_translation: tuple[float, float] = (0.0, 0.0),
    min_shear: float = 0.0,
    max_shear: float = 0.0,
    min_scaling: tuple[float, float] = (1.0, 1.0),
    max_scaling: tuple[float, float] = (1.0, 1.0),
    flip_x_chance: float = 0.0,
    flip_y_chance: float = 0.0,
) -> np.ndarray:
    """One random matrix ``rotation . translation . shear . scaling . flip`` about the origin.

    The draw order (rotation, translation, shear, scaling, flip x, flip y) fixes the random stream;
    zero-width ranges still consume their draws, so a seed gives the same flips whatever the ranges.
    Translations are in whatever unit the caller uses (fractions of (W, H) for the generators here,
    see :func:`adjust_transform_for_image`).
    """
    angle = prng.uniform(min_rotation, max_rotation)
    offset = prng.uniform(min_translation, max_translation)
    shear_angle = prng.uniform(min_shear, max_shear)
    factor = prng.uniform(min_scaling, max_scaling)
    flip_x = prng.uniform(0, 1) < flip_x_chance
    flip_y = prng.uniform(0, 1) < flip_y_chance
    flip = scaling((1.0 - 2.0 * flip_x, 1.0 - 2.0 * flip_y))
    return rotation(angle) @ translation(offset) @ shear(shear_angle) @ scaling(factor) @ flip


class RandomTransformGenerator(Iterator):
    """Endless, picklable iterator of random 3x3 matrices (see :func:`random_transform`)."""

    def __init__(self, seed: int | None = None, **ranges) -> None:
        self.ranges = dict(ranges)
        self.prng = np.random.RandomState(seed)

    def __next__(self) -> np.ndarray:
        return random_transform(self.prng, **self.ranges)


def random_transform_generator(seed: int | None = None, **ranges) -> RandomTransformGenerator:
    """fizyr-style generator: only the given ranges vary (all default to "no change").

    Args:
        seed: seed of the iterator's own ``RandomState`` (None: from OS entropy, as the original).
        **ranges: :func:`random_transform` keywords, e.g. ``flip_x_chance=0.5``.
    """
    return RandomTransformGenerator(seed=seed, **ranges)


def augmenting_transform_generator(
    seed: int | None = None, **overrides
) -> RandomTransformGenerator:
    """Matrices for ``--random-transform``: the §8.4 ranges, unless overridden."""
    return random_transform_generator(seed=seed, **{**RANDOM_TRANSFORM_RANGES, **overrides})


def default_transform_generator(seed: int | None = None) -> RandomTransformGenerator:
    """The training default without ``--random-transform``: horizontal flip only, p = 0.5 (KEEP)."""
    return random_transform_generator(seed=seed, flip_x_chance=TrainConfig().flip_x_chance)


def adjust_transform_for_image(
    transform: np.ndarray, image_shape: tuple[int, ...], relative_translation: bool = True
) -> np.ndarray:
    """Scale the translation column by (W, H) (relative translation) and centre the transform.

    Args:
        transform: (3, 3) matrix about the origin, as drawn by :func:`random_transform`.
        image_shape: (H, W[, C]) of the image it will be applied to.
        relative_translation: translations are fractions of the image size.

    Returns:
        A new (3, 3) matrix acting about the image centre ``(W / 2, H / 2)``.
    """
    height, width = image_shape[:2]
    result = np.array(transform, dtype=np.float64, copy=True)
    if relative_translation:
        result[0:2, 2] *= [width, height]
    return change_transform_origin(result, (0.5 * width, 0.5 * height))


def apply_transform(
    matrix: np.ndarray,
    image: np.ndarray,
    interpolation: int = cv2.INTER_LINEAR,
    border_mode: int = cv2.BORDER_REPLICATE,
    border_value: float = 0.0,
) -> np.ndarray:
    """Warp ``image`` by ``matrix`` (input -> output coordinates), keeping its size (§8.4).

    Args:
        matrix: (3, 3) affine matrix; only the top two rows are used.
        image: (H, W, C) image (uint8 or float32).
        interpolation: OpenCV interpolation flag (bilinear by default).
        border_mode: OpenCV border mode (replicate by default).
        border_value: fill value for ``cv2.BORDER_CONSTANT``.
    """
    return cv2.warpAffine(
        image,
        np.asarray(matrix, dtype=np.float64)[:2, :],
        dsize=(image.shape[1], image.shape[0]),
        flags=interpolation,
        borderMode=border_mode,
        borderValue=border_value,
    )


def transform_aabb(transform: np.ndarray, aabb: np.ndarray) -> np.ndarray:
    """Axis-aligned bounding boxes of transformed boxes.

    QUIRK (§8.4): the result is neither clipped to the image nor re-filtered.

    Args:
        transform: (3, 3) matrix.
        aabb: (4,) or (M, 4) boxes (x1, y1, x2, y2).

    Returns:
        float64 array of the same shape: min/max of the four transformed corners of each box.
    """
    boxes = np.asarray(aabb, dtype=np.float64)
    flat = boxes.reshape(-1, 4)
    x1, y1, x2, y2 = flat.T
    # corners (x1,y1), (x2,y2), (x1,y2), (x2,y1) of each box: (M, 4) x and y
    xs = np.stack([x1, x2, x1, x2], axis=1)
    ys = np.stack([y1, y2, y2, y1], axis=1)
    m = np.asarray(transform, dtype=np.float64)
    tx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    ty = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    out = np.stack([tx.min(axis=1), ty.min(axis=1), tx.max(axis=1), ty.max(axis=1)], axis=1)
    return out.reshape(boxes.shape)
