"""Every constant of the SKU-110K recipe, once, with where it comes from (spec §4–§7).

Argparse (``bin/``) is the only user-facing configuration; these frozen dataclasses hold the
defaults it starts from and the values library code falls back to. The EM-Merger's constants live
beside it in :class:`..utils.em_merger.EmMergerConfig` so that
module stays free of everything else.

This module imports nothing heavy (no TensorFlow, no Keras).
"""

from __future__ import annotations

from dataclasses import dataclass

# --- Layer and output names (spec §5.8): a stable API, used by get_layer, loss dicts, by-name
# weight loading and the stage-2 freezing rule ("iou" in the name => trainable in stage 2). ---
REGRESSION = "regression"  # stage-1 output (B, N, 4): corner deltas
CLASSIFICATION = "classification"  # stage-1 output (B, N, C): sigmoid "hard" scores
IOU = "iou"  # Soft-IoU output (B, N, C): sigmoid "soft" scores
IOU_REGRESSION_OUTPUT = "iou_regression_output"  # stage-2 output (B, N, 4 + C + C)
PYRAMID_LEVELS = ("P3", "P4", "P5", "P6", "P7")
IOU_SUBSTRING = "iou"  # QUIRK/KEEP: only layers whose name contains this learn in stage 2

# --- Input preprocessing (spec §8.4): Caffe-converted ImageNet weights => BGR, mean only. ---
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class AnchorConfig:
    """RetinaNet anchors (spec §5.3), one source for the NumPy targets and the graph layer."""

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
    """Anchor assignment (spec §6.1)."""

    negative_overlap: float = 0.4  # max IoU < 0.4 => background (state 0)
    positive_overlap: float = 0.5  # max IoU >= 0.5 => positive (state 1); between => ignore (-1)
    bbox_mean: float = 0.0  # corner-offset regression targets are (delta - mean) / std
    bbox_std: float = 0.2  # std 0.2, as fizyr/keras-retinanet and the original


@dataclass(frozen=True)
class LossConfig:
    """Losses (spec §7)."""

    focal_alpha: float = 0.25  # focal loss alpha (Lin et al. 2017)
    focal_gamma: float = 2.0  # focal loss gamma
    smooth_l1_sigma: float = 3.0  # smooth-L1 switches from quadratic to linear at 1 / sigma**2
    iou_hard_score_gate: float = 0.1  # Soft-IoU loss only where hard score > 0.1 (paper §3.1)
    prior_probability: float = 0.01  # classification bias init = -log((1 - p) / p)


@dataclass(frozen=True)
class TrainConfig:
    """Stage-1 / stage-2 training defaults (spec §4.1, §7.4)."""

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
    """Inference defaults (spec §4.3, §9)."""

    score_threshold: float = (
        0.1  # keep anchors with hard score > 0.1 (now passed to the graph, B17)
    )
    hard_score_rate: float = 0.5  # confidence = r * hard + (1 - r) * soft
    max_detections: int = 9999  # top-k by confidence fed to the EM-Merger
    draw_threshold: float = 0.5  # draw merged detections with confidence > 0.5
