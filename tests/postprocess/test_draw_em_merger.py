"""scripts/draw_em_merger.py: the panels come from the merger's own steps, on a tiny case."""

import importlib.util
import os
import sys

import cv2
import numpy as np

from object_detector_retinanet.keras_retinanet.postprocess import merge_detections

SCRIPT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "scripts",
    "draw_em_merger.py",
)


def _script():
    spec = importlib.util.spec_from_file_location("draw_em_merger", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def _two_objects():
    """Two objects apart on a 60x100 image, three overlapping detections each."""
    rows = []
    for x0, score in ((10, 0.9), (60, 0.8)):
        for dx, dy, drop in ((0, 0, 0.0), (2, 1, 0.1), (-1, 2, 0.2)):
            rows.append([x0 + dx, 15 + dy, x0 + 30 + dx, 45 + dy, score - drop, score - drop])
    return np.array(rows, dtype=np.float64)


def test_steps_are_the_mergers(tmp_path):
    draw = _script()
    rows = _two_objects()
    steps = draw.merger_steps(rows, (60, 100))
    assert steps.heat.shape == steps.mask.shape and steps.heat.max() > 0
    assert len(steps.contours) == len(steps.regions.rect) == 2  # one region per object
    assert steps.regions.k.tolist() == [1, 1]
    np.testing.assert_array_equal(steps.merged, merge_detections(rows, (60, 100)))
    assert len(steps.merged) == 2
    for contour in steps.contours:  # full-resolution pixels, inside the image
        assert contour[:, 0].max() < 100 and contour[:, 1].max() < 60


def test_draw_panels_writes_a_png_of_the_asked_width(tmp_path):
    draw = _script()
    image = np.full((60, 100, 3), 128, dtype=np.uint8)
    out = tmp_path / "figs" / "panels.png"
    steps = draw.draw_panels(image, _two_objects(), out, objects=2, width_px=600)
    written = cv2.imread(str(out))
    assert written is not None and written.shape[1] == 600
    assert len(steps.merged) == 2
