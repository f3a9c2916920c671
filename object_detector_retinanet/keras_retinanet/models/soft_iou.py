"""The Soft-IoU head and the stage-2 training model (paper §3.1; §5.4, §5.6).

The Soft-IoU layer predicts, for every anchor, the IoU of its detection with the object it
covers. It is a separate tower on the same P3–P7 features as the other heads (not stacked on the
classification features) and is trained in a second stage, alone: every layer whose name lacks
"iou" is frozen (the authors found the two-stage recipe more stable, issues #49/#70).

Contracts (stated once):
- The IoU tower's layers are ``pyramid_iou_0..3``, ``pyramid_iou``, ``pyramid_iou_reshape``,
  ``pyramid_iou_sigmoid`` in sub-model ``iou_submodel``; its concatenated output is ``iou``
  (B, N, C). No other layer name contains "iou".
- The stage-2 training model has one output, ``iou_regression_output`` (B, N, 4 + C + C) =
  ``[decoded boxes (4), soft_iou (C), classification (C)]``; the Soft-IoU loss reads it that way
  against targets ``[absolute matched GT box (4), anchor state]`` (B, N, 5).
"""

import keras

from object_detector_retinanet.keras_retinanet import config
from object_detector_retinanet.keras_retinanet.layers import RegressBoxes
from object_detector_retinanet.keras_retinanet.models.retinanet import (
    _normal,
    apply_submodel,
    build_anchors,
    build_head,
    pyramid_features,
)
from object_detector_retinanet.keras_retinanet.models.weights import iter_layers


def default_iou_model(num_classes, num_anchors, name="iou_submodel"):
    """Soft-IoU head: (B, H, W, 256) -> (B, H*W*A, C) in (0, 1).

    Same shape as the other heads; the last conv has an N(0, 0.01) kernel and zero bias, so the
    head starts at ~0.5 everywhere.
    """
    return build_head(
        "pyramid_iou", num_classes, num_anchors, _normal(), activation="sigmoid", name=name
    )


def has_iou_head(model) -> bool:
    """True when ``model`` already outputs ``iou``."""
    return config.IOU in model.output_names


def add_iou_head(model, num_classes, num_anchors=None, name="retinanet"):
    """Attach a fresh Soft-IoU head to a built stage-1 model, sharing all of its layers.

    Nothing is rebuilt or copied: the new model's outputs are the stage-1 ``regression`` and
    ``classification`` tensors plus ``iou`` computed from the same ``P3``..``P7`` layers. Stage 2
    (§4.2) builds the stage-1 graph, attaches the head with this function, then loads the stage-1
    file by layer name (``models.weights.load_weights_by_name``): every stage-1 weight, and a
    freshly initialised IoU head unless the file has IoU layers too.

    Returns:
        A model with outputs ``[regression, classification, iou]`` (the original's order).
    """
    if has_iou_head(model):
        return model
    if num_anchors is None:
        num_anchors = config.AnchorConfig().num_anchors
    iou = apply_submodel(
        config.IOU, default_iou_model(num_classes, num_anchors), pyramid_features(model)
    )
    return keras.Model(inputs=model.inputs, outputs=list(model.outputs) + [iou], name=name)


def freeze_non_iou_layers(model) -> None:
    """KEEP (§5.6): every layer whose name lacks "iou" becomes non-trainable, recursively.

    A sub-model's ``trainable`` flag is left alone when its name contains "iou" (so its inner
    layers decide for themselves); Keras propagates a False flag on a container to its children,
    which is what freezes ``regression_submodel`` and ``classification_submodel`` entirely.
    """
    for layer in iter_layers(model):
        if config.IOU_SUBSTRING not in layer.name:
            layer.trainable = False


def retinanet_iou(model, anchor_config=None, name="retinanet-iou"):
    """The stage-2 training model (§5.6) around a model with an ``iou`` output.

    Freezes every non-"iou" layer, decodes boxes from the (frozen) regression output with the
    in-graph anchors (no ClipBoxes, as the original), and concatenates
    ``[boxes (4), iou (C), classification (C)]`` into the single output ``iou_regression_output``.
    """
    if not has_iou_head(model):
        raise ValueError("retinanet_iou needs a model with an 'iou' output; see add_iou_head().")
    freeze_non_iou_layers(model)
    outputs = dict(zip(model.output_names, model.outputs))
    anchors = build_anchors(pyramid_features(model), anchor_config)
    boxes = RegressBoxes(
        mean=config.TargetConfig.bbox_mean, std=config.TargetConfig.bbox_std, name="boxes"
    )([anchors, outputs[config.REGRESSION]])
    # float32 even under mixed precision: float16 cannot hold sub-pixel boxes above ~1024 px.
    packed = keras.layers.Concatenate(axis=-1, name=config.IOU_REGRESSION_OUTPUT, dtype="float32")(
        [boxes, outputs[config.IOU], outputs[config.CLASSIFICATION]]
    )
    return keras.Model(inputs=model.inputs, outputs=packed, name=name)
