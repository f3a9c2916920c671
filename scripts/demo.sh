#!/usr/bin/env bash
# The whole SKU-110K recipe on a synthetic packed-shelf dataset, on CPU, from a clean clone:
#   synthetic data -> train.py (stage 1) -> train_iou.py (stage 2) -> predict.py with the
#   EM-Merger (and with plain NMS for comparison) -> evaluate.py (COCO AP/AP.75/AR300 at
#   maxDets 300, count MAE/RMSE).
# About 12 minutes on 2 CPU cores. A short from-scratch run: expect a detector that finds the
# products roughly (AP.50 ~0.3) and an EM-Merger that counts them far better than NMS; train
# longer for better boxes (DEMO_EPOCHS1=20 ...). Knobs: DEMO_EPOCHS1 / DEMO_EPOCHS2 (100 steps
# each), DEMO_TRAIN / DEMO_TEST (images), DEMO_SIZE (pixels), DEMO_DIR (output folder).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup_env.sh
export TF_CPP_MIN_LOG_LEVEL=2 KERAS_BACKEND=tensorflow PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
PY=.venv/bin/python
BIN=object_detector_retinanet/keras_retinanet/bin
OUT=${DEMO_DIR:-demo_output}
SIZE=${DEMO_SIZE:-256}
SIDES=(--image-min-side "$SIZE" --image-max-side "$SIZE")
# The CLIs default to $SKU110K_ROOT/{images,annotations}: point it at the synthetic dataset.
export SKU110K_ROOT="$OUT/data"
rm -rf "$SKU110K_ROOT"

echo "== 1/6 synthetic packed shelves -> $SKU110K_ROOT"
$PY $BIN/synth.py --out "$SKU110K_ROOT" --train "${DEMO_TRAIN:-200}" --val 0 \
  --test "${DEMO_TEST:-10}" --height "$SIZE" --width "$SIZE" --seed 0

echo "== 2/6 stage 1: base RetinaNet from random weights"
# No ImageNet download here: BatchNorm learns and Adam runs at 1e-4 (stack notes).
$PY $BIN/train.py --no-weights --lr 1e-4 --epochs "${DEMO_EPOCHS1:-5}" --steps 100 --seed 0 \
  "${SIDES[@]}" --verbose 2 csv
BASE=$(ls -t "$SKU110K_ROOT"/snapshot/*/resnet50_csv_*.weights.h5 | head -1)

echo "== 3/6 stage 2: Soft-IoU head on the frozen base ($BASE)"
$PY $BIN/train_iou.py --weights "$BASE" --lr 1e-4 --epochs "${DEMO_EPOCHS2:-1}" --steps 100 \
  --seed 0 "${SIDES[@]}" --verbose 2 csv
IOU=$(ls -t "$SKU110K_ROOT"/snapshot/*/iou_resnet50_csv_*.weights.h5 | head -1)

echo "== 4/6 predict the test split with the EM-Merger"
$PY $BIN/predict.py "${SIDES[@]}" --results-dir "$OUT/results_em" csv "$IOU" --hard_score_rate=0.5
echo "== 5/6 the same network with plain IoU-NMS at 0.5 instead"
$PY $BIN/predict.py "${SIDES[@]}" --merger nms --no-draw --results-dir "$OUT/results_nms" \
  csv "$IOU" --hard_score_rate=0.5

echo "== 6/6 evaluate"
GT="$SKU110K_ROOT/annotations/annotations_test.csv"
for merger in nms em; do
  echo "-- $merger"
  $PY $BIN/evaluate.py "$(ls -t "$OUT/results_$merger"/*.csv | head -1)" --annotations "$GT" \
    --plots "$OUT/plots_$merger" --json "$OUT/metrics_$merger.json"
done
echo "Demo done: $OUT/results_em/ (CSV), $SKU110K_ROOT/res_images_iou/ (drawings),"
echo "           $OUT/metrics_{em,nms}.json and $OUT/plots_{em,nms}/"
