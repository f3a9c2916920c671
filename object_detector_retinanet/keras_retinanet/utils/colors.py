"""Per-label drawing colours (§2: the original's ``colors.py``).

The original shipped a fixed table of 80 colours that ``predict`` never used, because it passes
explicit colours (green ground truth, red detections, §11.2). This module keeps the helper for
callers that want one colour per class: colours are spread around the hue circle by the golden
ratio, so neighbouring labels get clearly different colours and any non-negative label has one.
"""

from __future__ import annotations

import colorsys

_GOLDEN_RATIO_CONJUGATE = 0.618033988749895  # hue step: successive labels land far apart


def label_color(label: int) -> tuple[int, int, int]:
    """A stable, saturated BGR colour for a class label.

    Args:
        label: Class id, ``>= 0``.

    Returns:
        ``(b, g, r)`` with each channel an ``int`` in ``[0, 255]``, usable directly by OpenCV.

    Raises:
        ValueError: If ``label`` is negative (e.g. the ``-1`` padding of the inference model).
    """
    label = int(label)
    if label < 0:
        raise ValueError(f"label_color: label must be >= 0, got {label}")
    hue = (label * _GOLDEN_RATIO_CONJUGATE) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.9, 0.95)
    return int(round(blue * 255)), int(round(green * 255)), int(round(red * 255))
