"""How well does a trained Soft-IoU head track the real IoU? (paper §3.1)

For every image of an annotations CSV: run the stage-2 model, decode each anchor's box, and take
the anchors the Soft-IoU loss trains on (positive: IoU >= 0.5 with a ground-truth box, and hard
score > 0.1). Report the Spearman rank correlation of the predicted Soft-IoU with the true IoU of
the decoded box with its object, next to the same correlation for the objectness ("hard") score.

Usage:
    PYTHONPATH=. python scripts/soft_iou_correlation.py --weights iou_resnet50_csv_01.weights.h5 \\
        --annotations DATA/annotations/annotations_test.csv --base_dir DATA/images --size 256
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", required=True, help="Stage-2 (iou_*) weights file.")
    parser.add_argument("--annotations", required=True, help="SKU-110K-format annotations CSV.")
    parser.add_argument("--base_dir", default=None, help="Image folder (default: the CSV's).")
    parser.add_argument("--size", type=int, default=800, help="Image min side (default 800).")
    parser.add_argument("--max-side", type=int, default=None, help="Max side (default: --size).")
    parser.add_argument("--json", default=None, help="Also write the figures to this JSON file.")
    args = parser.parse_args(argv)

    import numpy as np
    from scipy.stats import spearmanr

    from object_detector_retinanet.keras_retinanet import config
    from object_detector_retinanet.keras_retinanet.models.retinanet import build_retinanet
    from object_detector_retinanet.keras_retinanet.models.soft_iou import (
        add_iou_head,
        retinanet_iou,
    )
    from object_detector_retinanet.keras_retinanet.models.weights import load_weights_by_name
    from object_detector_retinanet.keras_retinanet.preprocessing.csv_generator import (
        CSVGenerator,
    )
    from object_detector_retinanet.keras_retinanet.utils.anchors import stage2_targets
    from object_detector_retinanet.keras_retinanet.utils.boxes import paired_overlap

    model = add_iou_head(build_retinanet(num_classes=1), num_classes=1)
    load_weights_by_name(model, args.weights, skip_mismatch=False)
    training = retinanet_iou(model)  # output [boxes (4), soft_iou, hard]
    generator = CSVGenerator(
        args.annotations,
        base_dir=args.base_dir,
        targets_fn=stage2_targets,
        image_min_side=args.size,
        image_max_side=args.max_side or args.size,
        shuffle_groups=False,
        group_method="none",
    )
    soft, hard, true_iou = [], [], []
    for i in range(len(generator)):
        inputs, targets = generator[i]
        packed = training.predict_on_batch(inputs)[0]
        target = targets[config.IOU_REGRESSION_OUTPUT][0]
        selected = (target[:, 4] == 1) & (packed[:, 5] > config.LossConfig.iou_hard_score_gate)
        soft.append(packed[selected, 4])
        hard.append(packed[selected, 5])
        true_iou.append(
            paired_overlap(packed[selected, :4].astype("float64"), target[selected, :4])
        )
    soft, hard, true_iou = (np.concatenate(v) for v in (soft, hard, true_iou))
    result = {
        "images": len(generator),
        "anchors": int(soft.size),
        "spearman_soft": float(spearmanr(soft, true_iou).statistic),
        "spearman_hard": float(spearmanr(hard, true_iou).statistic),
        "mean_true_iou": float(true_iou.mean()),
        "mean_soft_iou": float(soft.mean()),
    }
    print(
        f"{result['images']} images, {result['anchors']} positive anchors with hard > 0.1: "
        f"Spearman(Soft-IoU, IoU) = {result['spearman_soft']:.3f}, "
        f"Spearman(hard score, IoU) = {result['spearman_hard']:.3f}; "
        f"mean IoU {result['mean_true_iou']:.3f}, mean Soft-IoU {result['mean_soft_iou']:.3f}"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
