"""Every constant of the SKU-110K recipe, once, with where it comes from (§4–§7).

Argparse (``bin/``) is the only user-facing configuration; these frozen dataclasses hold the
defaults it starts from and the values library code falls back to, the EM-Merger's
(:class:`EmMergerConfig`, used by ``postprocess/``) included.

This module imports nothing heavy (no TensorFlow, no Keras).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

#: The default ``class_name,class_id`` map: ``object,0`` (§8.2).
DEFAULT_CLASS_FILE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "bin", "class_mappings.csv"
)

# --- Layer and output names (§5.8): a stable API, used by get_layer, loss dicts, by-name
# weight loading and the stage-2 freezing rule ("iou" in the name => trainable in stage 2). ---
REGRESSION = "regression"  # stage-1 output (B, N, 4): corner deltas
CLASSIFICATION = "classification"  # stage-1 output (B, N, C): sigmoid "hard" scores
IOU = "iou"  # Soft-IoU output (B, N, C): sigmoid "soft" scores
IOU_REGRESSION_OUTPUT = "iou_regression_output"  # stage-2 output (B, N, 4 + C + C)
PYRAMID_LEVELS = ("P3", "P4", "P5", "P6", "P7")
IOU_SUBSTRING = "iou"  # QUIRK/KEEP: only layers whose name contains this learn in stage 2

# --- Input preprocessing (§8.4): Caffe-converted ImageNet weights => BGR, mean only. ---
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class AnchorConfig:
    """RetinaNet anchors (§5.3), one source for the NumPy targets and the graph layer."""

    sizes: tuple[int, ...] = (32, 64, 128, 256, 512)  # base side per level P3..P7 (2 ** (l + 2))
    strides: tuple[int, ...] = (8, 16, 32, 64, 128)  # feature stride per level (2 ** l)
    ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # h / w; outer loop in generate_anchors
    scales: tuple[float, ...] = (2.0**0, 2.0 ** (1.0 / 3.0), 2.0 ** (2.0 / 3.0))  # inner loop

    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map location (9 by default)."""
        return len(self.ratios) * len(self.scales)


@dataclass(frozen=True)
class TargetConfig:
    """Anchor assignment (§6.1)."""

    negative_overlap: float = 0.4  # max IoU < 0.4 => background (state 0)
    positive_overlap: float = 0.5  # max IoU >= 0.5 => positive (state 1); between => ignore (-1)
    bbox_mean: float = 0.0  # corner-offset regression targets are (delta - mean) / std
    bbox_std: float = 0.2  # std 0.2, as fizyr/keras-retinanet and the original


@dataclass(frozen=True)
class LossConfig:
    """Losses (§7)."""

    focal_alpha: float = 0.25  # focal loss alpha (Lin et al. 2017)
    focal_gamma: float = 2.0  # focal loss gamma
    smooth_l1_sigma: float = 3.0  # smooth-L1 switches from quadratic to linear at 1 / sigma**2
    iou_hard_score_gate: float = 0.1  # Soft-IoU loss only where hard score > 0.1 (paper §3.1)
    prior_probability: float = 0.01  # classification bias init = -log((1 - p) / p)


@dataclass(frozen=True)
class TrainConfig:
    """Stage-1 / stage-2 training defaults (§4.1, §7.4)."""

    learning_rate: float = 1e-5  # Adam, the original's (suits fine-tuning from ImageNet weights)
    clipnorm: float = 1e-3  # Adam gradient-norm clip, the original's
    image_min_side: int = 800  # resize: shorter side to 800 ...
    image_max_side: int = 1333  # ... unless the longer side would exceed 1333
    batch_size: int = 1
    epochs: int = 150
    steps: int = 10000
    reduce_lr_factor: float = 0.1  # ReduceLROnPlateau on the *training* loss (QUIRK)
    reduce_lr_patience: int = 2
    reduce_lr_min_delta: float = 1e-4  # was `epsilon` in Keras 2
    flip_x_chance: float = 0.5  # KEEP: horizontal flip even without --random-transform


@dataclass(frozen=True)
class PredictConfig:
    """Inference defaults (§4.3, §9)."""

    score_threshold: float = (
        0.1  # keep anchors with hard score > 0.1 (now passed to the graph, B17)
    )
    hard_score_rate: float = 0.5  # confidence = r * hard + (1 - r) * soft
    max_detections: int = 9999  # top-k by confidence fed to the EM-Merger
    draw_threshold: float = 0.5  # draw merged detections with confidence > 0.5


# Columns of the (N, 7) detection rows that predict feeds the merger, merges, writes and draws
# (§9.8): [x1, y1, x2, y2, confidence, hard_score, label].
X1, Y1, X2, Y2, CONFIDENCE, HARD_SCORE, LABEL = range(7)


# --- EM-Merger (paper §4; the story behind each value: docs/em-merger.md) ---
# Per-region pick rules of EmMergerConfig.selection.
SELECTIONS = ("original", "confidence", "hard", "soft_iou", "consensus", "candidate_iou")
# The rules that read the Soft-IoU score (recovered from the confidence mix: they need r < 1).
SOFT_SELECTIONS = ("soft_iou", "consensus", "candidate_iou")


@dataclass(frozen=True)
class EmMergerConfig:
    """EM-Merger settings: the original code's effective constants plus this port's own knobs.

    Field names and order are a public API (``merge_detections(..., config)``, pickled into
    worker processes).
    """

    # Boxes shrink to about w/2 x h/2 for the heat map, the sigmas (w/4, h/4) and the median area
    # of the K estimate. QUIRK: the original's class default 0.3 is overwritten at run time.
    box_size_factor: float = 0.5
    # Candidate boxes must be strictly wider and taller than this (px).
    min_box_size: int = 5
    # chi2(2) quantile of the redundancy ellipses: radius sqrt(chi2.ppf(0.5, 2)) = 1.1774 sigma.
    ellipsoid_thresh: float = 0.5
    # Regions with K <= min_k skip EM and fall back to NMS on their members (0: EM always).
    min_k: int = 0
    # Heat values <= 4 on the 0..255 map are background (cv2.THRESH_TOZERO at 4).
    heat_threshold: int = 4
    # A region's bounding rectangle (of its heat-map contour) must be wider and taller (px).
    min_contour_side: int = 3
    # Cap on the number of objects K estimated for one region.
    max_k: int = 100
    # EM iterations at most (the original's collapse() default of 100 is never used).
    max_iter: int = 20
    # EM stops once the objective improves by no more than this (the unused default: 1e-100).
    epsilon: float = 1e-10
    # Agglomerative-init work per region, (n - k) * (2n - k)^2 distance cells; a region above
    # it falls back to NMS. About what the original's 3 s SIGALRM timeout allowed.
    init_budget: float = 1e9
    # EM work per region, n * k KL evaluations per E-step; when spent, the agglomerative
    # parameters are used (replaces the original's 10 s timeout, practically never reached).
    em_budget: float = 1e8
    # Candidate box half-size in sigmas (QUIRK: an axis-aligned rectangle, not the ellipse).
    candidate_sigmas: float = 2.0
    # Angular step (degrees) of the redundancy ellipses' polygons (cv2.ellipse2Poly).
    ellipse_delta: int = 15
    # True reproduces the original's negated angle, which mirrors tilted ellipses.
    mirror_ellipse_angle: bool = False
    # Per-region fallback NMS: IoMin >= 0.3 suppresses (QUIRK: intersection / min area).
    fallback_nms_threshold: float = 0.3
    # Final suppression across regions: IoMin >= 0.3 suppresses (QUIRK: not IoU).
    final_nms_threshold: float = 0.3
    # Per-candidate pick among the detections it claims, one of SELECTIONS. "original" (KEEP):
    # 0.5 * confidence + 0.5 * hard (= 0.75 hard + 0.25 soft at rate 0.5); "confidence"; "hard";
    # "soft_iou" (the Soft-IoU score); "consensus" (sum over the claimed detections of
    # soft * IoU with the candidate: a soft-weighted medoid); "candidate_iou" (soft * IoU with
    # the candidate's 2-sigma box). Ties: the highest confidence first.
    selection: str = "original"
    # Input column of the soft (Soft-IoU) score; None: recovered from
    # confidence = r * hard + (1 - r) * soft with r = hard_score_rate.
    soft_column: int | None = None
    # r of the confidence mix above (as predict's --hard_score_rate).
    hard_score_rate: float = PredictConfig.hard_score_rate
    # Heat-map sampling step s in px: None picks it from the box sizes; 1 renders the
    # original's full-resolution map exactly; any int >= 1 forces it.
    heat_map_downscale: int | None = None
    # Automatic s: the median shrunk box side spans about this many heat-map samples.
    heat_map_samples_per_box: float = 8.0

    def __post_init__(self):
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {self.selection!r}")
        if self.heat_map_downscale is not None and int(self.heat_map_downscale) < 1:
            raise ValueError(f"heat_map_downscale must be >= 1, got {self.heat_map_downscale}")
        if self.heat_map_samples_per_box <= 0:
            raise ValueError("heat_map_samples_per_box must be > 0")
