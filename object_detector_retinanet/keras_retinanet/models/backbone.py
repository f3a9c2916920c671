"""ResNet backbones from keras-resnet, made to build under Keras 3 (§5.1).

keras-resnet 0.2.0 (the original's backbone package, kept as the dependency) defines
``BatchNormalization.call(self, *args, **kwargs)``. Keras 3 derives the input shape it hands to
``build`` from the *name* of ``call``'s first argument, so with ``*args`` it passes ``None`` and the
first BatchNormalization fails with ``TypeError: 'NoneType' object is not subscriptable``.
:func:`patch_keras_resnet` gives the class an explicit ``call(inputs, training=None)`` with the same
behaviour (a frozen layer always runs in inference mode). It is applied once, idempotently, before a
backbone is built; the package's source is not copied.

ImageNet weights are fizyr's Caffe-converted files (BGR input, Caffe mean, no std), downloaded and
md5-checked like the original and loaded by layer name (:mod:`..utils.weights`).
"""

import keras
import keras_resnet.layers
import keras_resnet.models

# fizyr/keras-models release v0.0.1: the files the original downloads (§5.1).
IMAGENET_WEIGHTS_URL = "https://github.com/fizyr/keras-models/releases/download/v0.0.1/{}"
IMAGENET_WEIGHTS = {
    "resnet50": ("ResNet-50-model.keras.h5", "3e9f4e4f77bbe2c9bec13b53ee1c2319"),
    "resnet101": ("ResNet-101-model.keras.h5", "05dc86924389e5b401a9ea0348a3213c"),
    "resnet152": ("ResNet-152-model.keras.h5", "6ee11ef2b135592f8031058820bb9e71"),
}
BACKBONES = {
    "resnet50": keras_resnet.models.ResNet50,
    "resnet101": keras_resnet.models.ResNet101,
    "resnet152": keras_resnet.models.ResNet152,
}
# Measured on synthetic shelves (docs/training-from-scratch.md §2): with BatchNorm learning from
# scratch, Keras' default momentum 0.99 lets the moving statistics lag the weights so far that
# inference scores far below the network's ability; 0.9 closes the gap.
SCRATCH_BN_MOMENTUM = 0.9


def _frozen_aware_call(self, inputs, training=None, mask=None):
    # Same contract as keras-resnet's call: a frozen layer always uses its moving statistics.
    if self.freeze:
        training = False
    return keras.layers.BatchNormalization.call(self, inputs, training=training, mask=mask)


def patch_keras_resnet() -> None:
    """Give keras-resnet's ``BatchNormalization`` a Keras-3-compatible ``call`` (idempotent)."""
    cls = keras_resnet.layers.BatchNormalization
    if cls.call is not _frozen_aware_call:
        cls.call = _frozen_aware_call
    # Register it so whole-model `.keras` files that contain it can be loaded back.
    name = "keras_resnet>BatchNormalization"
    if keras.saving.get_registered_object(name) is None:
        keras.saving.register_keras_serializable(package="keras_resnet")(cls)


def validate_backbone(name: str) -> None:
    """Raise ValueError for a backbone this port does not build."""
    if name not in BACKBONES:
        raise ValueError(
            f"Backbone '{name}' is not supported; choose one of {sorted(BACKBONES)} "
            "(the original also listed vgg/mobilenet/densenet, which it never tested)."
        )


def resnet_backbone(inputs, name: str = "resnet50", freeze_bn: bool = True, bn_momentum=None):
    """Build a keras-resnet ResNet on ``inputs`` and return ``(resnet_model, [C3, C4, C5])``.

    Args:
        inputs: a ``keras.Input`` of shape (None, None, 3), BGR, Caffe-mean-subtracted.
        name: ``resnet50`` (the one the paper used), ``resnet101`` or ``resnet152``.
        freeze_bn: True as the original (BatchNorm uses its stored statistics and never updates:
            right for ImageNet weights). From scratch it must be False or the network cannot train.
        bn_momentum: moving-average momentum for learning BatchNorm layers; None keeps Keras'
            default 0.99 (use :data:`SCRATCH_BN_MOMENTUM` from scratch).

    Returns:
        The keras-resnet model object (used to freeze the backbone and for its layers) and the
        C3, C4, C5 tensors (strides 8, 16, 32; 512, 1024, 2048 channels). The caller builds its own
        outer model from these tensors, so the ResNet layers sit flat in it with their original
        names (``conv1``, ``bn_conv1``, ``res2a_branch2a`` ...), which by-name loading relies on.
    """
    validate_backbone(name)
    patch_keras_resnet()
    resnet = BACKBONES[name](inputs, include_top=False, freeze_bn=freeze_bn)
    if bn_momentum is not None:
        for layer in resnet.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = bn_momentum
    return resnet, list(resnet.outputs[1:])


def freeze(model) -> None:
    """Mark every layer of ``model`` non-trainable (``--freeze-backbone``)."""
    for layer in model.layers:
        layer.trainable = False


def download_imagenet(name: str = "resnet50", cache_dir=None) -> str:
    """Download fizyr's Caffe-converted ImageNet weights (md5-checked) and return the local path.

    Raises:
        RuntimeError: when the download fails (e.g. offline), telling the user to pass a local file.
    """
    validate_backbone(name)
    filename, md5 = IMAGENET_WEIGHTS[name]
    url = IMAGENET_WEIGHTS_URL.format(filename)
    try:
        return keras.utils.get_file(
            filename, url, cache_subdir="models", file_hash=md5, cache_dir=cache_dir
        )
    except Exception as exc:  # network errors come in many types (URLError, OSError, ...)
        raise RuntimeError(
            f"Could not download the ImageNet weights {filename} from {url} ({exc}). If this "
            f"machine is offline, download the file elsewhere and pass it with "
            f"`--imagenet-weights PATH` (or `--weights PATH`), or train from scratch with "
            f"`--no-weights`."
        ) from exc
