"""RetinaNet: FPN P3–P7, shared heads, and the inference wrapper (§5.2–§5.5, §5.7, §5.8).

Reads top-down: heads, pyramid, the stage-1 model (:func:`retinanet`), the inference model
(:func:`retinanet_bbox`) and the builder that ties a backbone to them (:func:`build_retinanet`).
The Soft-IoU head and the stage-2 training model live in :mod:`.soft_iou` and plug into the same
seams (a ``(name, submodel)`` pair; the ``P3``..``P7`` layers looked up by name).

Every layer name here is part of the contract of §5.8 (by-name weight loading, the stage-2
"iou" freezing rule); none outside the IoU head may contain "iou".
"""

import keras

from object_detector_retinanet.keras_retinanet import config
from object_detector_retinanet.keras_retinanet.initializers import PriorProbability
from object_detector_retinanet.keras_retinanet.layers import (
    Anchors,
    ClipBoxes,
    FilterDetections,
    RegressBoxes,
    UpsampleLike,
)
from object_detector_retinanet.keras_retinanet.models.backbone import (
    SCRATCH_BN_MOMENTUM,
    freeze,
    resnet_backbone,
)

FEATURE_SIZE = 256  # every FPN and head conv has 256 filters (Lin et al. 2017)
HEAD_DEPTH = 4  # 4x [3x3 conv 256, ReLU] per head


def _normal():
    return keras.initializers.RandomNormal(mean=0.0, stddev=0.01)


def build_head(
    prefix,
    num_values,
    num_anchors,
    final_kernel_initializer,
    final_bias_initializer="zeros",
    activation=None,
    pyramid_feature_size=FEATURE_SIZE,
    feature_size=FEATURE_SIZE,
    name=None,
):
    """One shared head: (B, H, W, 256) -> (B, H*W*A, num_values). Every head has this shape.

    4x [3x3 conv ``feature_size``, ReLU, kernel N(0, 0.01), zero bias] named ``{prefix}_0..3``,
    then a 3x3 conv with ``A * num_values`` filters (``{prefix}``), a reshape to (-1, num_values)
    (``{prefix}_reshape``: the same location-major order as ``utils.anchors.shift``) and, when
    ``activation`` is given, ``{prefix}_{activation}``.
    """
    inputs = keras.Input(shape=(None, None, pyramid_feature_size))
    outputs = inputs
    for i in range(HEAD_DEPTH):
        outputs = keras.layers.Conv2D(
            filters=feature_size,
            kernel_size=3,
            strides=1,
            padding="same",
            activation="relu",
            kernel_initializer=_normal(),
            bias_initializer="zeros",
            name=f"{prefix}_{i}",
        )(outputs)
    outputs = keras.layers.Conv2D(
        filters=num_anchors * num_values,
        kernel_size=3,
        strides=1,
        padding="same",
        kernel_initializer=final_kernel_initializer,
        bias_initializer=final_bias_initializer,
        name=prefix,
    )(outputs)
    outputs = keras.layers.Reshape((-1, num_values), name=f"{prefix}_reshape")(outputs)
    if activation:
        outputs = keras.layers.Activation(activation, name=f"{prefix}_{activation}")(outputs)
    return keras.Model(inputs=inputs, outputs=outputs, name=name)


def default_classification_model(
    num_classes,
    num_anchors,
    prior_probability=config.LossConfig.prior_probability,
    name="classification_submodel",
):
    """Classification head: (B, H, W, 256) -> (B, H*W*A, C) sigmoid "hard" scores.

    The last conv has a zero kernel and the bias PriorProbability(0.01) = -log(99) ~ -4.595, so
    every anchor starts at p = 0.01 (Lin et al. 2017, §4.1).
    """
    return build_head(
        "pyramid_classification",
        num_classes,
        num_anchors,
        final_kernel_initializer="zeros",
        final_bias_initializer=PriorProbability(probability=prior_probability),
        activation="sigmoid",
        name=name,
    )


def default_regression_model(num_anchors, num_values=4, name="regression_submodel"):
    """Regression head: (B, H, W, 256) -> (B, H*W*A, 4) corner deltas; all kernels N(0, 0.01)."""
    return build_head("pyramid_regression", num_values, num_anchors, _normal(), name=name)


def default_submodels(num_classes, num_anchors):
    """The stage-1 heads as ``(output name, submodel)`` pairs, in output order."""
    return [
        (config.REGRESSION, default_regression_model(num_anchors)),
        (config.CLASSIFICATION, default_classification_model(num_classes, num_anchors)),
    ]


def create_pyramid_features(C3, C4, C5, feature_size=FEATURE_SIZE):
    """FPN exactly as the original (§5.2): returns [P3, P4, P5, P6, P7].

    Convs use Keras' default initialisers (glorot-uniform kernel, zero bias) and no activation.
    """
    conv = keras.layers.Conv2D
    # upsample C5 to get P5 from the FPN paper
    P5 = conv(feature_size, kernel_size=1, strides=1, padding="same", name="C5_reduced")(C5)
    P5_upsampled = UpsampleLike(name="P5_upsampled")([P5, C4])
    P5 = conv(feature_size, kernel_size=3, strides=1, padding="same", name="P5")(P5)

    # add P5 elementwise to C4
    P4 = conv(feature_size, kernel_size=1, strides=1, padding="same", name="C4_reduced")(C4)
    P4 = keras.layers.Add(name="P4_merged")([P5_upsampled, P4])
    P4_upsampled = UpsampleLike(name="P4_upsampled")([P4, C3])
    P4 = conv(feature_size, kernel_size=3, strides=1, padding="same", name="P4")(P4)

    # add P4 elementwise to C3
    P3 = conv(feature_size, kernel_size=1, strides=1, padding="same", name="C3_reduced")(C3)
    P3 = keras.layers.Add(name="P3_merged")([P4_upsampled, P3])
    P3 = conv(feature_size, kernel_size=3, strides=1, padding="same", name="P3")(P3)

    # "P6 is obtained via a 3x3 stride-2 conv on C5" (on C5, not on P5)
    P6 = conv(feature_size, kernel_size=3, strides=2, padding="same", name="P6")(C5)

    # "P7 is computed by applying ReLU followed by a 3x3 stride-2 conv on P6"
    P7 = keras.layers.Activation("relu", name="C6_relu")(P6)
    P7 = conv(feature_size, kernel_size=3, strides=2, padding="same", name="P7")(P7)
    return [P3, P4, P5, P6, P7]


def apply_submodel(name, submodel, features):
    """Run one shared head on every pyramid level and concatenate: (B, sum(H*W*A), K).

    The output is float32 even under a mixed-float16 policy, so the losses see full precision.
    """
    return keras.layers.Concatenate(axis=1, name=name, dtype="float32")(
        [submodel(f) for f in features]
    )


def retinanet(
    inputs, backbone_layers, num_classes, num_anchors=None, submodels=None, name="retinanet"
):
    """The stage-1 (training) model: outputs ``regression (B, N, 4)``, ``classification (B, N, C)``.

    Args:
        inputs: the image input tensor (B, H, W, 3).
        backbone_layers: [C3, C4, C5] tensors computed from ``inputs``.
        num_classes: C (1 for SKU-110K).
        num_anchors: anchors per location (9 by default).
        submodels: ``(name, submodel)`` pairs; defaults to :func:`default_submodels`.
    """
    if num_anchors is None:
        num_anchors = config.AnchorConfig().num_anchors
    if submodels is None:
        submodels = default_submodels(num_classes, num_anchors)
    features = create_pyramid_features(*backbone_layers)
    outputs = [apply_submodel(n, m, features) for n, m in submodels]
    return keras.Model(inputs=inputs, outputs=outputs, name=name)


def pyramid_features(model):
    """The P3..P7 output tensors of a built RetinaNet, looked up by name (§5.8)."""
    return [model.get_layer(p).output for p in config.PYRAMID_LEVELS]


def build_anchors(features, anchor_config=None):
    """In-graph anchors for each pyramid level, concatenated: (B, N, 4), layer ``anchors``."""
    anchor_config = anchor_config or config.AnchorConfig()
    anchors = [
        Anchors(
            size=anchor_config.sizes[i],
            stride=anchor_config.strides[i],
            ratios=anchor_config.ratios,
            scales=anchor_config.scales,
            name=f"anchors_{i}",
        )(f)
        for i, f in enumerate(features)
    ]
    return keras.layers.Concatenate(axis=1, name="anchors")(anchors)


def retinanet_bbox(
    model,
    nms=False,
    score_threshold=config.PredictConfig.score_threshold,
    nms_threshold=0.5,
    max_detections=None,
    anchor_config=None,
    name="retinanet-bbox",
):
    """Wrap a RetinaNet into the inference model (§5.7).

    anchors -> RegressBoxes (std 0.2) -> ClipBoxes (to the input's W, H) -> FilterDetections.
    The original hard-wired ``nms=False`` and a score threshold of 0.1, and padded to 999,999
    rows; here ``score_threshold`` reaches the graph (B17) and the padding is capped at the anchor
    count (or ``max_detections``, B16). Every output after the first two of ``model`` (the Soft-IoU
    when present) is gathered per kept anchor.

    Returns:
        A model with outputs ``boxes (B, K, 4)``, ``scores (B, K)``, ``labels (B, K)`` and, for
        an IoU model, ``iou (B, K, C)``; rows past the detections are -1.
    """
    features = pyramid_features(model)
    anchors = build_anchors(features, anchor_config)
    regression, classification, *others = model.outputs
    boxes = RegressBoxes(
        mean=config.TargetConfig.bbox_mean, std=config.TargetConfig.bbox_std, name="boxes"
    )([anchors, regression])
    boxes = ClipBoxes(name="clipped_boxes")([model.inputs[0], boxes])
    detections = FilterDetections(
        nms=nms,
        score_threshold=score_threshold,
        nms_threshold=nms_threshold,
        max_detections=max_detections,
        name="filtered_detections",
    )([boxes, classification, *others])
    return keras.Model(inputs=model.inputs, outputs=detections, name=name)


def build_retinanet(
    num_classes,
    backbone="resnet50",
    freeze_bn=True,
    freeze_backbone=False,
    submodels=None,
):
    """Backbone + FPN + heads: the stage-1 model the CLIs train and the other wrappers wrap.

    Args:
        num_classes: C.
        backbone: keras-resnet depth name.
        freeze_bn: the original's frozen BatchNorm (right for ImageNet weights); False lets BN learn
            with momentum :data:`SCRATCH_BN_MOMENTUM`, which training from scratch needs.
        freeze_backbone: make every ResNet layer non-trainable (``--freeze-backbone``).
    """
    inputs = keras.Input(shape=(None, None, 3), name="input_1")
    resnet, C = resnet_backbone(
        inputs,
        backbone,
        freeze_bn=freeze_bn,
        bn_momentum=None if freeze_bn else SCRATCH_BN_MOMENTUM,
    )
    if freeze_backbone:
        freeze(resnet)
    return retinanet(inputs, C, num_classes, submodels=submodels)
