#!/usr/bin/env bash
# The whole SKU-110K recipe on synthetic packed shelves, on CPU, from a clean clone:
#   synthetic data -> train.py (stage 1, from random weights) -> train_iou.py (stage 2) ->
#   predict.py with the EM-Merger, saving its raw detections -> evaluate.py -> ablation.py (the
#   paper's table: hard or Soft-IoU score, NMS or EM-Merger, re-merged from the raw detections) ->
#   the closing report (that table, the Soft-IoU/IoU rank correlation, and the JSON paths).
# About 17 minutes on 2 CPU cores (README, "Quick start"). The recipe and how it was chosen:
# docs/training-from-scratch.md. Knobs: DEMO_STEPS1 / DEMO_STEPS2 (training steps of each
# stage), DEMO_TRAIN / DEMO_TEST (images), DEMO_DIR (output folder).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
./scripts/setup_env.sh
export TF_CPP_MIN_LOG_LEVEL=2 KERAS_BACKEND=tensorflow PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
PY=.venv/bin/python
BIN=object_detector_retinanet/keras_retinanet/bin
OUT=${DEMO_DIR:-demo_output}
SIZE=256
SIDES=(--image-min-side "$SIZE" --image-max-side "$SIZE")
STEPS1=${DEMO_STEPS1:-900}
STEPS2=${DEMO_STEPS2:-300}
EPOCHS1=6  # stage 1 runs STEPS1 steps in 6 epochs; BatchNorm learns in the first, then settles
# The CLIs default to $SKU110K_ROOT/{images,annotations}: point it at the synthetic dataset.
export SKU110K_ROOT="$OUT/data"
rm -rf "$OUT"

echo "== 1/6 synthetic packed shelves -> $SKU110K_ROOT"
$PY $BIN/synth.py --out "$SKU110K_ROOT" --train "${DEMO_TRAIN:-1000}" --val 0 \
  --test "${DEMO_TEST:-20}" --height "$SIZE" --width "$SIZE" --seed 0

echo "== 2/6 stage 1: base RetinaNet from random weights ($STEPS1 steps)"
# No ImageNet weights offline: BatchNorm learns with batch statistics for one epoch, then its
# population statistics are measured and frozen; Adam with a warm-up and a cosine decay from 2e-4
# (docs/training-from-scratch.md).
$PY $BIN/train.py --no-weights --lr 2e-4 --lr-schedule cosine --warmup-steps 100 \
  --epochs $EPOCHS1 --steps $((STEPS1 / EPOCHS1)) --freeze-bn-after 1 --seed 0 "${SIDES[@]}" \
  --verbose 2 csv
BASE=$(ls -t "$SKU110K_ROOT"/snapshot/*/resnet50_csv_*.weights.h5 | head -1)

echo "== 3/6 stage 2: Soft-IoU head on the frozen base ($STEPS2 steps)"
$PY $BIN/train_iou.py --weights "$BASE" --lr 1e-3 --clipnorm 0 --epochs 1 --steps "$STEPS2" \
  --seed 0 "${SIDES[@]}" --verbose 2 csv
IOU=$(ls -t "$SKU110K_ROOT"/snapshot/*/iou_resnet50_csv_*.weights.h5 | head -1)

echo "== 4/6 predict the test split with the EM-Merger, saving the raw detections"
$PY $BIN/predict.py "${SIDES[@]}" --save-path "$OUT/drawings" --results-dir "$OUT/results_em" \
  --save-raw "$OUT/raw" csv "$IOU" --hard_score_rate=0.5

echo "== 5/6 evaluate; the ablation (NMS and EM-Merger, hard and Soft-IoU scores) from $OUT/raw"
GT="$SKU110K_ROOT/annotations/annotations_test.csv"
$PY $BIN/evaluate.py "$(ls -t "$OUT/results_em"/*.csv | head -1)" --annotations "$GT" \
  --plots "$OUT/plots_em" --json "$OUT/metrics_em.json" > "$OUT/evaluate_em.txt"
$PY $BIN/ablation.py "$OUT/raw" --annotations "$GT" --hard_score_rate 0.5 --out "$OUT/ablation" \
  > "$OUT/ablation.txt"
$PY scripts/soft_iou_correlation.py --weights "$IOU" --annotations "$GT" \
  --base_dir "$SKU110K_ROOT/images" --size "$SIZE" --json "$OUT/soft_iou_correlation.json" \
  > /dev/null

echo "== 6/6 results (the same stage-2 network: two scores, two post-processors)"
$PY scripts/demo_report.py --ablation "$OUT/ablation/ablation.json" \
  --correlation "$OUT/soft_iou_correlation.json" EM-Merger="$OUT/metrics_em.json"
echo "Drawings: $OUT/drawings/ (ground truth green, detections red); plots: $OUT/plots_em/"
echo "Demo done in $(( ($(date +%s) - start) / 60 )) min $(( ($(date +%s) - start) % 60 )) s."
