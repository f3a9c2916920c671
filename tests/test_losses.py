"""Losses (§7.1–§7.3): hand-computed values, masking rules and Keras 3 compile integration."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from object_detector_retinanet.keras_retinanet import losses

LN2 = math.log(2.0)


def _np(x):
    return keras.ops.convert_to_numpy(x)


# --- smooth L1 (§7.2) ---


def test_smooth_l1_hand_values_normalised_by_positives():
    # Anchor 0 (positive): |diff| = [1, 0.05, 0, 0]
    #   1 >= 1/9 -> linear: 1 - 0.5/9;  0.05 < 1/9 -> quadratic: 0.5 * 9 * 0.05**2 = 0.01125
    # Anchor 1 (positive): diff 0 -> 0 (counts in the normaliser: 2 positives)
    # Anchor 2 (background) and anchor 3 (ignore): large diffs, excluded.
    y_true = np.array(
        [[[1.0, 0.05, 0, 0, 1], [2, 2, 2, 2, 1], [9, 9, 9, 9, 0], [7, 7, 7, 7, -1]]], "float32"
    )
    y_pred = np.array([[[0, 0, 0, 0], [2, 2, 2, 2], [0, 0, 0, 0], [0, 0, 0, 0]]], "float32")
    expected = ((1 - 0.5 / 9) + 0.5 * 9 * 0.05**2) / 2
    assert float(losses.smooth_l1()(y_true, y_pred)) == pytest.approx(expected, rel=1e-6)


def test_smooth_l1_sigma_moves_the_switch_point():
    # sigma = 1: switch at |x| = 1; |x| = 0.5 -> 0.5 * 0.25 = 0.125 (with sigma 3 it would be 0.444)
    y_true = np.array([[[0.5, 0, 0, 0, 1]]], "float32")
    y_pred = np.zeros((1, 1, 4), "float32")
    assert float(losses.smooth_l1(sigma=1.0)(y_true, y_pred)) == pytest.approx(0.125)


def test_smooth_l1_no_positives_is_finite_zero():
    # An image without GT: every anchor is background (state 0), targets are zero.
    y_true = np.zeros((2, 5, 5), "float32")
    y_pred = np.full((2, 5, 4), 3.0, "float32")
    value = float(losses.smooth_l1()(y_true, y_pred))
    assert value == 0.0


# --- focal (§7.1) ---


def test_focal_one_positive_one_negative_at_half():
    # positive, p = 0.5: alpha 0.25 * (1 - 0.5)**2 * ln 2 = 0.0625 ln 2
    # negative, p = 0.5: (1 - 0.25) * 0.5**2 * ln 2 = 0.1875 ln 2
    # ignore anchor (-1), p = 0.9: excluded. One positive -> normaliser 1.
    y_true = np.array([[[1.0], [0.0], [-1.0]]], "float32")
    y_pred = np.array([[[0.5], [0.5], [0.9]]], "float32")
    expected = (0.0625 + 0.1875) * LN2  # ≈ 0.1733
    assert float(losses.focal()(y_true, y_pred)) == pytest.approx(expected, rel=1e-6)


def test_focal_clips_probabilities_like_keras():
    # positive with p = 0: weight 0.25 * 1**2, BCE = -ln(clip(0) = 1e-7) ≈ 16.118 (not inf)
    y_true = np.array([[[1.0]]], "float32")
    y_pred = np.array([[[0.0]]], "float32")
    expected = 0.25 * -math.log(1e-7)  # ≈ 4.0295
    assert float(losses.focal()(y_true, y_pred)) == pytest.approx(expected, rel=1e-5)


def test_focal_normaliser_is_max_one_positives_per_anchor():
    # No positive: normaliser is 1. Two negatives at p = 0.5: 2 * 0.1875 ln 2.
    y_true = np.zeros((1, 2, 1), "float32")
    y_pred = np.full((1, 2, 1), 0.5, "float32")
    assert float(losses.focal()(y_true, y_pred)) == pytest.approx(2 * 0.1875 * LN2, rel=1e-6)
    # Two classes, one positive anchor [1, 0] (state 1) and one ignore anchor [-1, -1]:
    # elements 0.0625 ln 2 + 0.1875 ln 2, one positive anchor (not two elements) -> / 1.
    y_true = np.array([[[1.0, 0.0], [-1.0, -1.0]]], "float32")
    y_pred = np.full((1, 2, 2), 0.5, "float32")
    assert float(losses.focal()(y_true, y_pred)) == pytest.approx(0.25 * LN2, rel=1e-6)


def test_focal_alpha_gamma_arguments():
    # gamma 0, alpha 0.5: plain half-weighted BCE: 0.5 ln 2 + 0.5 ln 2
    y_true = np.array([[[1.0], [0.0]]], "float32")
    y_pred = np.full((1, 2, 1), 0.5, "float32")
    assert float(losses.focal(alpha=0.5, gamma=0.0)(y_true, y_pred)) == pytest.approx(LN2, rel=1e-6)


# --- Soft-IoU (§7.3) ---


def _iou_pair(state=1.0, hard=0.9, soft=0.25):
    # GT [0, 0, 10, 10] and prediction [5, 0, 15, 10]: intersection 50, union 150 -> IoU 1/3.
    y_true = np.array([0, 0, 10, 10, state], "float32")
    y_pred = np.array([5, 0, 15, 10, soft, hard], "float32")
    return y_true, y_pred


def test_soft_iou_hand_value():
    t, p = _iou_pair()
    expected = -(1 / 3 * math.log(0.25) + 2 / 3 * math.log(0.75))  # ≈ 0.6539
    value = float(losses.soft_iou()(t[None, None], p[None, None]))
    assert value == pytest.approx(expected, rel=1e-5)


def test_soft_iou_selects_positive_anchors_above_hard_gate():
    rows = [
        _iou_pair(),  # selected
        _iou_pair(hard=0.1),  # hard == 0.1: not > 0.1 (strict), excluded
        _iou_pair(state=0.0),  # background, excluded
        _iou_pair(state=-1.0),  # ignore, excluded
        _iou_pair(soft=0.5),  # selected: BCE(1/3, 0.5) = ln 2
    ]
    y_true = np.stack([r[0] for r in rows])[None]
    y_pred = np.stack([r[1] for r in rows])[None]
    first = -(1 / 3 * math.log(0.25) + 2 / 3 * math.log(0.75))
    expected = (first + LN2) / 2  # two selected anchors
    assert float(losses.soft_iou()(y_true, y_pred)) == pytest.approx(expected, rel=1e-5)


def test_soft_iou_no_qualifying_anchor_is_zero():
    t, p = _iou_pair(hard=0.05)
    assert float(losses.soft_iou()(t[None, None], p[None, None])) == 0.0


def test_soft_iou_rejects_multi_class_layout():
    # B24: the hard score is channel 5 only for one class.
    with pytest.raises(ValueError, match="B24"):
        losses.soft_iou()(np.zeros((1, 2, 5), "float32"), np.zeros((1, 2, 8), "float32"))


def test_zero_gt_image_gives_zero_regression_and_iou_loss_and_finite_gradients():
    # Targets of an image with no boxes: every anchor background, GT boxes all zero.
    n = 6
    reg_true = np.zeros((1, n, 5), "float32")
    iou_true = np.zeros((1, n, 5), "float32")
    rng = np.random.default_rng(0)
    reg_pred = rng.normal(size=(1, n, 4)).astype("float32")
    iou_pred = np.concatenate([np.zeros((1, n, 4)), rng.uniform(size=(1, n, 2))], axis=-1).astype(
        "float32"
    )  # degenerate zero boxes, high hard scores
    pred = tf.Variable(iou_pred)
    with tf.GradientTape() as tape:
        iou_loss = losses.soft_iou()(iou_true, pred)
    grad = tape.gradient(iou_loss, pred)
    assert float(losses.smooth_l1()(reg_true, reg_pred)) == 0.0
    assert float(iou_loss) == 0.0
    assert np.all(np.isfinite(_np(grad)))


def test_box_iou_has_no_plus_one_and_broadcasts():
    a = np.array([[0, 0, 10, 10]], "float32")
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30]], "float32")
    # 50 / (100 + 100 - 50) = 1/3 (with a +1 pixel term it would be 66 / 176 = 0.375);
    # a box with itself: 1; disjoint: 0
    iou = _np(losses.box_iou(a[:, None, :], b[None, :, :]))
    assert iou.shape == (1, 3)
    np.testing.assert_allclose(iou[0], [1 / 3, 1.0, 0.0], rtol=1e-6)


# --- Keras integration ---


def test_losses_accept_float16_predictions():
    y_true = np.array([[[1.0], [0.0]]], "float32")
    y_pred = np.full((1, 2, 1), 0.5, "float16")
    value = losses.focal()(y_true, y_pred)
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    assert float(value) == pytest.approx(0.25 * LN2, rel=1e-6)


def test_loss_config_round_trip():
    for loss in (losses.focal(0.3, 1.5), losses.smooth_l1(2.0), losses.soft_iou(0.2)):
        restored = keras.losses.deserialize(keras.losses.serialize(loss))
        assert type(restored) is type(loss)
        assert restored.get_config() == loss.get_config()


def _stage1_model(num_anchors):
    """Outputs `regression` (B, N, 4) and `classification` (B, N, 1) from an input (B, N, 3)."""
    inputs = keras.Input((num_anchors, 3))
    regression = keras.layers.Dense(4, name="regression")(inputs)
    classification = keras.layers.Dense(1, activation="sigmoid", name="classification")(inputs)
    return keras.Model(inputs, [regression, classification])


def test_compiled_model_reports_the_loss_values_unreduced():
    rng = np.random.default_rng(1)
    batch, n = 2, 8
    x = rng.normal(size=(batch, n, 3)).astype("float32")
    states = np.array([[1, 0, -1, 1, 0, 0, 1, 0], [0, 0, 0, 1, -1, 0, 0, 0]], "float32")
    reg_true = np.concatenate([rng.normal(size=(batch, n, 4)), states[..., None]], -1)
    cls_true = states[..., None].copy()
    y = {"regression": reg_true.astype("float32"), "classification": cls_true}
    model = _stage1_model(n)
    model.compile(
        optimizer=keras.optimizers.SGD(0.0),
        loss={"regression": losses.smooth_l1(), "classification": losses.focal()},
    )
    pred_reg, pred_cls = model.predict_on_batch(x)
    # Keras' reduction must keep the scalar: the logged value is the loss of the whole batch.
    expected_reg = float(losses.smooth_l1()(y["regression"], pred_reg))
    expected_cls = float(losses.focal()(y["classification"], pred_cls))
    logs = model.evaluate(x, y, batch_size=batch, verbose=0, return_dict=True)
    assert logs["regression_loss"] == pytest.approx(expected_reg, rel=1e-5)
    assert logs["classification_loss"] == pytest.approx(expected_cls, rel=1e-5)
    assert logs["loss"] == pytest.approx(expected_reg + expected_cls, rel=1e-5)
    logs = model.train_on_batch(x, y, return_dict=True)
    assert logs["loss"] == pytest.approx(expected_reg + expected_cls, rel=1e-5)


def test_compiled_model_batch_without_positives_has_zero_regression_loss():
    n = 5
    x = np.ones((2, n, 3), "float32")
    y = {
        "regression": np.zeros((2, n, 5), "float32"),  # state 0 everywhere
        "classification": np.zeros((2, n, 1), "float32"),
    }
    model = _stage1_model(n)
    model.compile(
        optimizer="sgd", loss={"regression": losses.smooth_l1(), "classification": losses.focal()}
    )
    logs = model.train_on_batch(x, y, return_dict=True)
    assert logs["regression_loss"] == 0.0
    assert np.isfinite(logs["loss"])
