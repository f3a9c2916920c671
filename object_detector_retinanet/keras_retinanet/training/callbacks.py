"""The training driver's Keras callbacks: snapshot writing and the non-finite-loss guard."""

from __future__ import annotations

import math
import os

import keras

from object_detector_retinanet.keras_retinanet.models import batch_norm
from object_detector_retinanet.keras_retinanet.models.weights import (
    BACKBONE_ATTR,
    BN_SETTLED_ATTR,
    EPOCH_ATTR,
    FREEZE_BN_ATTR,
    STAGE_ATTR,
    snapshot_name,
    write_snapshot_attrs,
)


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops training at the first NaN/inf loss; the snapshot of that epoch is not written.

    It reads the logged loss, which ``fit`` averages over all replicas (and workers), so every
    worker of a multi-worker run stops after the same step. ``diverged`` and ``where`` (the step
    of the last epoch) tell the driver what happened.
    """

    def __init__(self):
        super().__init__()
        self.diverged = False
        self.where = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.diverged = True
            self.where = batch
            self.model.stop_training = True


class Snapshot(keras.callbacks.Callback):
    """Save the training model's weights (and optimizer) after every finite epoch.

    Args:
        folder: where the ``{prefix}{backbone}_csv_NN.weights.h5`` files go.
        stage: the training stage (snapshot prefix and name).
        backbone: the backbone's name, part of the file name and of the metadata.
        freeze_bn: whether BatchNorm was frozen from the start (stored, so a resume keeps it).
        guard: no snapshot is written after an epoch that ended on a NaN/inf loss.
        discard: delete each file as soon as it is written (a non-chief worker of a multi-worker
            run: it saves, so that every worker runs the same operations, but keeps nothing).
    """

    def __init__(self, folder, stage, backbone, freeze_bn, guard, discard=False):
        super().__init__()
        self.folder = folder
        self.stage = stage
        self.backbone = backbone
        self.freeze_bn = freeze_bn
        self.guard = guard
        self.discard = discard

    def on_epoch_end(self, epoch, logs=None):
        if self.guard.diverged:
            return
        name = snapshot_name(self.stage.prefix, self.backbone, epoch + 1)
        path = os.path.join(self.folder, name)
        self.model.save_weights(path)
        if self.discard:
            os.remove(path)
            return
        attrs = {
            EPOCH_ATTR: epoch + 1,
            STAGE_ATTR: self.stage.name,
            BACKBONE_ATTR: self.backbone,
            FREEZE_BN_ATTR: int(self.freeze_bn),
            BN_SETTLED_ATTR: int(batch_norm.is_frozen(self.model)),
        }
        write_snapshot_attrs(path, **attrs)
        print(f"\nEpoch {epoch + 1:02d}: saved snapshot {path}")
