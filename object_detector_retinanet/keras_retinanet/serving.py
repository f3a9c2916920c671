"""The inference network as files a server loads: a ``.keras`` model and a TensorFlow SavedModel.

The original's ``convert_model.py`` turned a training file into an inference file (§4.4). Here the
inference network is built from weights (:func:`~.inference.load_inference_model`) and written:

- :func:`save_keras_model`: the Keras model, outputs as :func:`~.models.retinanet.retinanet_bbox`
  gives them (``boxes``, ``scores``, ``labels`` and, with a Soft-IoU head, ``iou``); read back with
  :func:`load_keras_model`, which registers the custom layers first;
- :func:`export_saved_model`: a SavedModel whose signature ``serving_default`` (also ``serve``)
  is :data:`INPUT_NAME` ``image`` float32 ``(batch, H, W, 3)`` →
  ``{"boxes": (batch, K, 4) float32, "hard_scores": (batch, K) float32,
  "labels": (batch, K) int32, "soft_scores": (batch, K, 1) float32}``. The input is what
  :func:`~.inference.detect_image` feeds the network (§9.2): the original BGR image, Caffe mean
  subtracted (B 103.939, G 116.779, R 123.68; no scaling), then resized bilinearly so the shorter
  side is 800 unless the longer would pass 1333. Boxes are ``(x1, y1, x2, y2)`` in pixels of that
  resized input; rows are sorted by hard score, rows past the detections are -1. A model without
  a Soft-IoU head (stage 1) gives its hard score as the soft score, as predict does.

docs/serving.md shows how to call the SavedModel and feed its outputs to the EM-Merger.
"""

from __future__ import annotations

import os

import keras

INPUT_NAME = "image"
OUTPUT_NAMES = ("boxes", "hard_scores", "labels", "soft_scores")
ENDPOINT = "serve"  # Keras' endpoint name; the SavedModel also lists it as "serving_default"


def has_soft_iou(inference_model) -> bool:
    """Whether an inference model has the Soft-IoU output (four outputs, not three)."""
    return len(inference_model.outputs) == 4


def serving_outputs(inference_model, image):
    """The signature's outputs for a batch ``image``: the model's, named, soft scores always.

    Returns:
        ``{"boxes", "hard_scores", "labels", "soft_scores"}`` tensors (see the module docstring).
    """
    import tensorflow as tf

    outputs = inference_model(image, training=False)
    boxes, hard, labels = outputs[:3]
    soft = outputs[3] if has_soft_iou(inference_model) else tf.expand_dims(hard, -1)
    return dict(zip(OUTPUT_NAMES, (boxes, hard, labels, soft)))


def export_saved_model(inference_model, out_dir: str | os.PathLike) -> str:
    """Write ``inference_model`` as a SavedModel with the signature of the module docstring.

    Keras' ``model.export`` names its input after the model's input layer and its outputs
    ``output_0..3``; this uses the same machinery (``keras.export.ExportArchive``) with the names
    of the signature.

    Returns:
        ``out_dir`` as a string.
    """
    import tensorflow as tf

    out_dir = os.fspath(out_dir)
    archive = keras.export.ExportArchive()
    archive.track(inference_model)

    def serve(image):
        return serving_outputs(inference_model, image)

    spec = tf.TensorSpec((None, None, None, 3), tf.float32, name=INPUT_NAME)
    archive.add_endpoint(ENDPOINT, serve, input_signature=[spec])
    archive.write_out(out_dir, verbose=False)
    return out_dir


def save_keras_model(inference_model, path: str | os.PathLike) -> str:
    """Write ``inference_model`` as a ``.keras`` file (read it with :func:`load_keras_model`)."""
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(f"a Keras model file must end in .keras, got {path}")
    inference_model.save(path)
    return path


def load_keras_model(path: str | os.PathLike):
    """Load a ``.keras`` inference model written by :func:`save_keras_model`.

    Registers what the file needs first: the custom layers (:mod:`.layers`), the classification
    bias initialiser and keras-resnet's BatchNormalization (:func:`~.models.backbone
    .patch_keras_resnet`).
    """
    import object_detector_retinanet.keras_retinanet.initializers  # noqa: F401 -- registers
    import object_detector_retinanet.keras_retinanet.layers  # noqa: F401 -- registers
    from object_detector_retinanet.keras_retinanet.models.backbone import patch_keras_resnet

    patch_keras_resnet()
    return keras.saving.load_model(os.fspath(path), compile=False)
