#!/usr/bin/env bash
# The whole SKU-110K recipe on a synthetic packed-shelf dataset, on CPU, from a clean clone:
#   synthetic data -> train.py (stage 1) -> train_iou.py (stage 2) -> predict.py (EM-Merger)
#   -> evaluate.py (COCO AP/AP.75/AR300 at maxDets 300, count MAE/RMSE).
# Takes ~15 minutes on 2 CPU cores. Scale with DEMO_STEPS1 / DEMO_STEPS2 / DEMO_TEST.
# Everything is written under ${DEMO_DIR:-demo_output}/.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup_env.sh
export TF_CPP_MIN_LOG_LEVEL=2 KERAS_BACKEND=tensorflow PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
PY=.venv/bin/python
OUT=${DEMO_DIR:-demo_output}
STEPS1=${DEMO_STEPS1:-300}
STEPS2=${DEMO_STEPS2:-100}
NTEST=${DEMO_TEST:-10}
BIN=object_detector_retinanet/keras_retinanet/bin
# The CLIs default to $SKU110K_ROOT/{images,annotations}: point it at the synthetic dataset.
export SKU110K_ROOT="$OUT/data"

echo "== 1/5 synthetic packed shelves -> $SKU110K_ROOT"
$PY $BIN/synth.py --out "$SKU110K_ROOT" --train 200 --val 10 --test "$NTEST" --seed 0

echo "== 2/5 stage 1: base RetinaNet, from scratch ($STEPS1 steps)"
# From random weights (no ImageNet download here): BatchNorm learns, Adam 1e-4 (stack notes).
$PY $BIN/train.py --no-weights --lr 1e-4 --epochs 1 --steps "$STEPS1" --seed 0 \
  --image-min-side 320 --image-max-side 320 --verbose 2 csv --val-annotations ''
BASE=$(ls -t "$SKU110K_ROOT"/snapshot/*/resnet50_csv_01.weights.h5 | head -1)

echo "== 3/5 stage 2: Soft-IoU head on the frozen base ($STEPS2 steps)"
$PY $BIN/train_iou.py --weights "$BASE" --lr 1e-4 --epochs 1 --steps "$STEPS2" --seed 0 \
  --image-min-side 320 --image-max-side 320 --verbose 2 csv --val-annotations ''
IOU=$(ls -t "$SKU110K_ROOT"/snapshot/*/iou_resnet50_csv_01.weights.h5 | head -1)

echo "== 4/5 predict on the test split with the EM-Merger"
$PY $BIN/predict.py --image-min-side 320 --image-max-side 320 csv "$IOU" --hard_score_rate=0.5
RESULTS=$(ls -t "$SKU110K_ROOT"/results/detections_output_iou_*.csv | head -1)

echo "== 5/5 evaluate"
$PY $BIN/evaluate.py "$RESULTS" --annotations "$SKU110K_ROOT/annotations/annotations_test.csv" \
  --plots "$OUT/plots" --json "$OUT/metrics.json"
echo "Demo done: results $RESULTS, drawings $SKU110K_ROOT/res_images_iou/, plots $OUT/plots/"
