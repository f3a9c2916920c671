"""Training losses of both stages (§7.1–§7.3), ``keras.ops`` only.

Owns the stage-1 losses :func:`focal` (classification) and :func:`smooth_l1` (corner-offset
regression), the stage-2 Soft-IoU loss :func:`soft_iou` (Goldman et al., CVPR 2019, §3.1: binary
cross-entropy between the predicted IoU and the real IoU of the decoded box with its ground truth;
the original's ``iou_score``), and the tensor IoU helper :func:`box_iou`.

Target packing (§6, one statement of the contract):

- the anchor state is ``-1`` ignore, ``0`` background, ``1`` positive;
- stage-1 regression ``y_true`` is ``(B, N, 5)`` = 4 encoded deltas + state, classification
  ``y_true`` is ``(B, N, C)`` with −1/0/1 per class and state = ``max`` over classes;
- stage-2 ``y_true`` is ``(B, N, 5)`` = the *absolute* matched GT box ``(x1, y1, x2, y2)`` + state,
  ``y_pred`` is ``(B, N, 4 + C + C)`` = ``[decoded box, soft_iou (C), classification (C)]``.

Each factory returns a registered ``keras.losses.Loss`` whose ``call`` returns a scalar (already
normalised by the number of positives), so Keras' ``sum_over_batch_size`` reduction leaves it as is
and a compiled model can be saved and reloaded with its losses. Everything is computed in float32
(mixed precision safe) with masks instead of ``where``-indices, so the losses compile under XLA.
"""

import keras
from keras import ops

from object_detector_retinanet.keras_retinanet.config import LossConfig

_EPSILON = 1e-7  # Keras' backend epsilon: BCE clipping and the IoU union term (§7.1, §7.3)


def _binary_crossentropy(target, output):
    """Element-wise BCE with ``output`` clipped to ``[1e-7, 1 - 1e-7]``, as Keras' (§7.1).

    Written out rather than calling ``keras.ops.binary_crossentropy``, whose TF backend may switch
    to the logits of a ``Sigmoid`` op and so skip the clipping the original had.
    """
    output = ops.clip(output, _EPSILON, 1.0 - _EPSILON)
    return -(target * ops.log(output) + (1.0 - target) * ops.log(1.0 - output))


def _normaliser(mask):
    """``max(1, number of True in mask)`` as float32."""
    return ops.maximum(1.0, ops.sum(ops.cast(mask, "float32")))


def _per_replica(loss):
    """Scale a replica's scalar loss by ``1 / num_replicas`` under ``tf.distribute``.

    Keras 3 applies this scaling inside its reduction only when a loss returns per-sample values;
    a scalar passes through unscaled, while the gradients are still *summed* across replicas and
    the reported loss is multiplied back by the replica count. Without this, a mirrored step on
    two replicas took twice the single-device step and reported twice the loss (see
    tests/training/test_distribute.py). Each replica normalises by its own positives, as every
    data-parallel RetinaNet does; outside a strategy this is the identity.
    """
    import tensorflow as tf  # KERAS_BACKEND=tensorflow is required by the project

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss if replicas == 1 else loss * (1.0 / replicas)


def box_iou(boxes_a, boxes_b, epsilon=_EPSILON):
    """Element-wise IoU of two broadcastable box tensors, ``(..., 4)`` each, ``(x1, y1, x2, y2)``.

    Areas are ``(x2 - x1) * (y2 - y1)`` with no +1 pixel term and the union gets ``epsilon``
    (§7.3). For an all-pairs matrix pass ``a[:, None, :]`` and ``b[None, :, :]``.

    Args:
        boxes_a: ``(..., 4)`` boxes.
        boxes_b: ``(..., 4)`` boxes, broadcastable against ``boxes_a``.
        epsilon: added to the union (Keras epsilon, 1e-7), so two empty boxes give 0, not NaN.

    Returns:
        ``(...)`` IoU in ``[0, 1]``.
    """
    left = ops.maximum(boxes_a[..., 0], boxes_b[..., 0])
    top = ops.maximum(boxes_a[..., 1], boxes_b[..., 1])
    right = ops.minimum(boxes_a[..., 2], boxes_b[..., 2])
    bottom = ops.minimum(boxes_a[..., 3], boxes_b[..., 3])
    intersection = ops.maximum(0.0, right - left) * ops.maximum(0.0, bottom - top)
    area_a = (boxes_a[..., 2] - boxes_a[..., 0]) * (boxes_a[..., 3] - boxes_a[..., 1])
    area_b = (boxes_b[..., 2] - boxes_b[..., 0]) * (boxes_b[..., 3] - boxes_b[..., 1])
    return intersection / (area_a + area_b - intersection + epsilon)


@keras.saving.register_keras_serializable(package="sku110k")
class FocalLoss(keras.losses.Loss):
    """Focal loss over non-ignored anchors, normalised by the positives (§7.1, KEEP).

    ``y_true`` ``(B, N, C)`` with −1/0/1, ``y_pred`` ``(B, N, C)`` sigmoid scores ``p``. For every
    element of an anchor whose state (max over classes) is not −1:
    ``alpha_t * (1 - p_t) ** gamma * BCE(label, p)`` with ``alpha_t = alpha`` for label 1 else
    ``1 - alpha`` and ``1 - p_t = 1 - p`` for label 1 else ``p`` (unclipped, as the original). The
    sum is divided by ``max(1, number of anchors with state 1)``.

    Args:
        alpha: positive-class weight (``LossConfig.focal_alpha``, 0.25).
        gamma: focusing exponent (``LossConfig.focal_gamma``, 2).
        **kwargs: ``keras.losses.Loss`` arguments (``name``, ``reduction``, ``dtype``).
    """

    def __init__(self, alpha=LossConfig.focal_alpha, gamma=LossConfig.focal_gamma, **kwargs):
        kwargs.setdefault("name", "focal")
        super().__init__(**kwargs)
        self.alpha = float(alpha)
        self.gamma = float(gamma)

    def call(self, y_true, y_pred):
        labels = ops.cast(y_true, "float32")
        probabilities = ops.cast(y_pred, "float32")
        state = ops.max(labels, axis=-1)  # (B, N)
        keep = ops.expand_dims(ops.not_equal(state, -1.0), -1)  # (B, N, 1)
        positive = ops.equal(labels, 1.0)
        alpha_factor = ops.where(positive, self.alpha, 1.0 - self.alpha)
        focal_weight = ops.where(positive, 1.0 - probabilities, probabilities)
        focal_weight = alpha_factor * focal_weight**self.gamma
        loss = focal_weight * _binary_crossentropy(labels, probabilities)
        loss = ops.where(keep, loss, 0.0)  # ignore anchors (state -1) contribute nothing
        return _per_replica(ops.sum(loss) / _normaliser(ops.equal(state, 1.0)))

    def get_config(self):
        config = super().get_config()
        config.update({"alpha": self.alpha, "gamma": self.gamma})
        return config


@keras.saving.register_keras_serializable(package="sku110k")
class SmoothL1Loss(keras.losses.Loss):
    """Smooth-L1 over the positive anchors, normalised by their count (§7.2, KEEP).

    ``y_true`` ``(B, N, 5)`` = 4 encoded deltas + state, ``y_pred`` ``(B, N, 4)``. With
    ``x = |pred - target|``: ``0.5 * sigma**2 * x**2`` if ``x < 1 / sigma**2`` else
    ``x - 0.5 / sigma**2``; summed over the state-1 anchors and divided by ``max(1, #positives)``.

    Args:
        sigma: switch point parameter (``LossConfig.smooth_l1_sigma``, 3).
        **kwargs: ``keras.losses.Loss`` arguments.
    """

    def __init__(self, sigma=LossConfig.smooth_l1_sigma, **kwargs):
        kwargs.setdefault("name", "smooth_l1")
        super().__init__(**kwargs)
        self.sigma = float(sigma)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        pred_deltas = ops.cast(y_pred, "float32")
        gt_deltas = y_true[..., :4]
        positive = ops.equal(y_true[..., 4], 1.0)  # (B, N)
        sigma_squared = self.sigma**2
        diff = ops.abs(pred_deltas - gt_deltas)
        loss = ops.where(
            diff < 1.0 / sigma_squared, 0.5 * sigma_squared * diff**2, diff - 0.5 / sigma_squared
        )
        loss = ops.where(ops.expand_dims(positive, -1), loss, 0.0)
        return _per_replica(ops.sum(loss) / _normaliser(positive))

    def get_config(self):
        config = super().get_config()
        config.update({"sigma": self.sigma})
        return config


@keras.saving.register_keras_serializable(package="sku110k")
class SoftIoULoss(keras.losses.Loss):
    """The Soft-IoU loss (paper §3.1; §7.3, KEEP), single class.

    ``y_true`` ``(B, N, 5)`` = absolute GT box + state; ``y_pred`` ``(B, N, 6)`` =
    ``[x1, y1, x2, y2, soft_iou, hard_score]``. Anchors with state 1 *and* hard score
    ``> hard_score_gate`` are selected; the target is the IoU of the decoded box with its GT box
    (a constant: ``stop_gradient``), the loss ``BCE(target, soft_iou)`` summed and divided by
    ``max(1, #selected)``, 0 when none is selected. A non-finite IoU (a degenerate decoded box with
    zero union) counts as target 0 instead of turning the loss into NaN.

    B24: channel 5 is the hard score only for one class (the original hard-coded it); other layouts
    are rejected with a ``ValueError``.

    Args:
        hard_score_gate: the 0.1 of paper §3.1 (``LossConfig.iou_hard_score_gate``; eg4000/
            SKU110K_CVPR19 issue #60).
        **kwargs: ``keras.losses.Loss`` arguments.
    """

    def __init__(self, hard_score_gate=LossConfig.iou_hard_score_gate, **kwargs):
        kwargs.setdefault("name", "soft_iou")
        super().__init__(**kwargs)
        self.hard_score_gate = float(hard_score_gate)

    def call(self, y_true, y_pred):
        channels = y_pred.shape[-1]
        if channels is not None and channels != 6:
            raise ValueError(
                "soft_iou: y_pred must be (B, N, 6) = [box (4), soft_iou, hard_score] (one class); "
                f"got {channels} channels. Multi-class models are not supported (B24)."
            )
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        gt_boxes = y_true[..., :4]
        state = y_true[..., 4]
        pred_boxes = y_pred[..., :4]
        pred_iou = y_pred[..., 4]
        hard_score = y_pred[..., 5]
        selected = ops.logical_and(ops.equal(state, 1.0), hard_score > self.hard_score_gate)
        # The target depends on the (frozen) regression output only: a constant for this loss.
        gt_iou = ops.stop_gradient(box_iou(gt_boxes, pred_boxes))
        # Unselected rows (e.g. padding or background with degenerate boxes) must not carry a NaN
        # target: 0 * NaN in the gradient of the where() below would poison every weight.
        gt_iou = ops.where(ops.logical_and(selected, ops.isfinite(gt_iou)), gt_iou, 0.0)
        loss = _binary_crossentropy(gt_iou, pred_iou)
        loss = ops.where(selected, loss, 0.0)
        return _per_replica(ops.sum(loss) / _normaliser(selected))

    def get_config(self):
        config = super().get_config()
        config.update({"hard_score_gate": self.hard_score_gate})
        return config


def focal(alpha=LossConfig.focal_alpha, gamma=LossConfig.focal_gamma):
    """The stage-1 classification loss (§7.1); see :class:`FocalLoss`.

    Args:
        alpha: positive-class weight (0.25).
        gamma: focusing exponent (2.0).

    Returns:
        A ``keras.losses.Loss``: ``loss(y_true (B, N, C), y_pred (B, N, C)) -> scalar``.
    """
    return FocalLoss(alpha=alpha, gamma=gamma)


def smooth_l1(sigma=LossConfig.smooth_l1_sigma):
    """The stage-1 regression loss (§7.2); see :class:`SmoothL1Loss`.

    Args:
        sigma: 3.0 (quadratic below ``|x| < 1 / 9``).

    Returns:
        A ``keras.losses.Loss``: ``loss(y_true (B, N, 5), y_pred (B, N, 4)) -> scalar``.
    """
    return SmoothL1Loss(sigma=sigma)


def soft_iou(hard_score_gate=LossConfig.iou_hard_score_gate):
    """The stage-2 Soft-IoU loss (§7.3; the original's ``iou_score``).

    See :class:`SoftIoULoss`.

    Args:
        hard_score_gate: only anchors with hard score above this are trained (0.1).

    Returns:
        A ``keras.losses.Loss``: ``loss(y_true (B, N, 5), y_pred (B, N, 6)) -> scalar``.
    """
    return SoftIoULoss(hard_score_gate=hard_score_gate)
