#!/usr/bin/env python
"""Write a trained SKU-110K model as an inference network for serving (§4.4).

Usage:

    python object_detector_retinanet/keras_retinanet/bin/convert_model.py MODEL OUT.keras \\
        [--saved-model DIR] [--backbone resnet50] [--score-threshold 0.1] [--max-detections 9999]

MODEL is a weights file as predict takes it (stage-2 snapshot, stage-1 snapshot or original
Keras-2 ``.h5``). The inference network (ResNet-FPN, heads, Soft-IoU head, anchors, box decoding,
clipping to the input, score filtering; no NMS: the EM-Merger replaces it) is built from it and
written to OUT, a ``.keras`` file (load it with ``serving.load_keras_model``), and with
``--saved-model DIR`` also as a TensorFlow SavedModel (no project code needed to load it).

The SavedModel's signature ``serving_default`` (also ``serve``):

- input ``image``: float32 ``(batch, H, W, 3)``, preprocessed as predict does before the network
  (§9.2): the original image in BGR order, the Caffe mean subtracted per channel (B 103.939,
  G 116.779, R 123.68; no scaling), then resized bilinearly (``cv2.resize``) so that the shorter
  side is 800 unless the longer one would pass 1333 (``utils.image.preprocess_image`` then
  ``resize_image``);
- outputs, K = ``--max-detections`` rows per image, sorted by hard score, -1 past the detections:
  ``boxes`` float32 ``(batch, K, 4)`` ``(x1, y1, x2, y2)`` in pixels of the resized input (divide
  by the resize scale for original pixels); ``hard_scores`` float32 ``(batch, K)``, only those
  above ``--score-threshold``; ``labels`` int32 ``(batch, K)``; ``soft_scores`` float32
  ``(batch, K, 1)``, the Soft-IoU (the hard score for a model without that head).

predict keeps the ``--max-detections`` rows of highest *confidence* (``r * hard + (1 - r) * soft``)
among all anchors above the threshold; the graph keeps the K of highest *hard* score. The two agree
whenever at most K anchors pass the threshold. docs/serving.md shows the calls and the EM-Merger
on the outputs.
"""

import argparse
import os
import sys

if __name__ == "__main__" and not __package__:  # run as a file: make the package importable
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), *[".."] * 3)))

from object_detector_retinanet import utils as paths  # noqa: E402
from object_detector_retinanet.keras_retinanet import config  # noqa: E402
from object_detector_retinanet.keras_retinanet.bin import _args  # noqa: E402
from object_detector_retinanet.keras_retinanet.errors import (  # noqa: E402
    MissingInput,
    reports_input_errors,
)
from object_detector_retinanet.keras_retinanet.utils.runtime import setup_devices  # noqa: E402

NUM_CLASSES = 1  # SKU-110K's one class; predict and the signature's soft scores assume it (B24)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "model", help="Weights file (stage-2 snapshot, stage-1 snapshot or original .h5)."
    )
    parser.add_argument("out", help="The inference network as a Keras file (ending in .keras).")
    parser.add_argument(
        "--saved-model",
        metavar="DIR",
        default=None,
        help="Also export a TensorFlow SavedModel to this folder (signature in the description).",
    )
    _args.add_backbone_arg(parser, help="Backbone (default %(default)s).")
    _args.add_gpu_arg(parser, help="GPU id to use (sets CUDA_VISIBLE_DEVICES).")
    _args.add_score_threshold_arg(parser)
    parser.add_argument(
        "--max-detections",
        type=int,
        default=config.PredictConfig.max_detections,
        help="Rows K per image, the highest hard scores first (default %(default)s).",
    )
    args = parser.parse_args(argv)
    if not args.out.endswith(".keras"):
        parser.error(f"OUT must end in .keras, got {args.out}")
    if args.max_detections < 1:
        parser.error("--max-detections must be positive.")
    args.model = paths.resolve_path(args.model)
    args.out = paths.resolve_path(args.out)
    if args.saved_model:
        args.saved_model = paths.resolve_path(args.saved_model)
    return args


def convert(model_path, backbone, score_threshold, max_detections):
    """The inference network of a weights file, K = ``max_detections`` rows per image."""
    import keras

    from object_detector_retinanet.keras_retinanet.inference import load_inference_model
    from object_detector_retinanet.keras_retinanet.layers import FilterDetections

    model, _ = load_inference_model(model_path, backbone, NUM_CLASSES, score_threshold)
    # load_inference_model pads to every anchor (predict cuts later); a server wants a fixed K:
    # the same filtering layer, with K rows, on the same inputs.
    filtering = model.get_layer("filtered_detections")
    fixed_k = FilterDetections.from_config(
        {**filtering.get_config(), "max_detections": max_detections}
    )
    return keras.Model(inputs=model.inputs, outputs=fixed_k(filtering.input), name=model.name)


@reports_input_errors
def main(argv=None):
    """Convert; returns ``(keras_path, saved_model_dir or None)``."""
    args = parse_args(argv)
    if not os.path.isfile(args.model):
        raise MissingInput(f"{args.model}: no such weights file")
    setup_devices(args.gpu)

    from object_detector_retinanet.keras_retinanet import serving

    model = convert(args.model, args.backbone, args.score_threshold, args.max_detections)
    paths.create_folder(os.path.dirname(args.out) or ".")
    serving.save_keras_model(model, args.out)
    print(f"Saved {args.out}")
    if args.saved_model:
        serving.export_saved_model(model, args.saved_model)
        print(f"Saved the SavedModel {args.saved_model}")
    return args.out, args.saved_model


if __name__ == "__main__":
    main()
