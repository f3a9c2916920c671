"""Does the recipe learn? Over-fit two synthetic shelves (stage 1), then train the Soft-IoU head.

Measured when this test was written (seeded, 128x128, CPU): the stage-1 loss went from 3.57
(mean of the first 2 steps) to 1.18 (mean of the last 4 of 40 steps), a ratio of 0.33; after 40
stage-2 steps the Spearman correlation between predicted Soft-IoU and the true IoU of positive
anchors (hard score > 0.1) was 0.83 and 0.74 on the two images (mean 0.79). The bars below sit a
little under that.
"""

import keras
import numpy as np
import pytest
from scipy.stats import spearmanr

from object_detector_retinanet.keras_retinanet import config, losses
from object_detector_retinanet.keras_retinanet.models.retinanet import build_retinanet
from object_detector_retinanet.keras_retinanet.models.soft_iou import add_iou_head, retinanet_iou
from object_detector_retinanet.keras_retinanet.preprocessing.csv_generator import CSVGenerator
from object_detector_retinanet.keras_retinanet.utils.anchors import stage1_targets, stage2_targets
from object_detector_retinanet.keras_retinanet.utils.boxes import paired_overlap
from object_detector_retinanet.keras_retinanet.utils.synthetic import write_dataset

STEPS = 40
SIZE = 128


def _batches(root, targets_fn):
    generator = CSVGenerator(
        str(root / "annotations" / "annotations_train.csv"),
        base_dir=str(root / "images"),
        targets_fn=targets_fn,
        image_min_side=SIZE,
        image_max_side=SIZE,
        shuffle_groups=False,
        group_method="none",
    )
    return [generator[i] for i in range(len(generator))]


@pytest.mark.slow
def test_overfit_two_images_then_soft_iou_tracks_true_iou(tmp_path):
    write_dataset(
        tmp_path, counts={"train": 2, "val": 0, "test": 0}, height=SIZE, width=SIZE, seed=3
    )
    keras.utils.set_random_seed(0)

    # Stage 1 from scratch: BatchNorm learning, Adam 1e-4 (the from-scratch setting of the README).
    base = build_retinanet(num_classes=1, freeze_bn=False)
    base.compile(
        optimizer=keras.optimizers.Adam(1e-4),
        loss={config.REGRESSION: losses.smooth_l1(), config.CLASSIFICATION: losses.focal()},
    )
    batches = _batches(tmp_path, stage1_targets)
    history = [base.train_on_batch(*batches[s % 2])[0] for s in range(STEPS)]
    assert np.mean(history[-4:]) <= 0.5 * np.mean(history[:2]), history

    # Stage 2: only the IoU head learns.
    model = add_iou_head(base, num_classes=1)
    training = retinanet_iou(model)
    training.compile(optimizer=keras.optimizers.Adam(1e-4), loss=losses.soft_iou())
    batches = _batches(tmp_path, stage2_targets)
    key = config.IOU_REGRESSION_OUTPUT
    for s in range(STEPS):
        inputs, targets = batches[s % 2]
        training.train_on_batch(inputs, targets[key])

    rhos = []
    for inputs, targets in batches:
        packed = training.predict_on_batch(inputs)[0]  # [boxes(4), soft_iou, hard]
        target = targets[key][0]  # [matched GT box(4), state]
        selected = (target[:, 4] == 1) & (packed[:, 5] > 0.1)  # the loss' anchors (§7.3)
        assert selected.sum() >= 20
        true_iou = paired_overlap(
            packed[selected, :4].astype("float64"), target[selected, :4].astype("float64")
        )
        rhos.append(spearmanr(packed[selected, 4], true_iou).statistic)
    assert np.mean(rhos) > 0.6, rhos
