#!/usr/bin/env bash
# The main job end to end on the built-in phantom dataset: install; generate the cardiac phantom (20
# training cases, 10 test cases with labels); check, fingerprint, plan, preprocess and register it; train
# CCT-R with 2 labeled cases (the other 18 unlabeled); predict the test cases; evaluate them.
# Data goes under ./cctr_raw, ./cctr_preprocessed and ./cctr_results unless those variables say otherwise.
# Everything runs in the project environment (./.venv unless one is active; scripts/environment.sh).
# Re-running skips what is already done. DEMO_ITERATIONS sets the training length (default 300).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
source scripts/environment.sh  # python and the cctr_* commands of the environment install.sh filled
export cctr_raw="${cctr_raw:-$PWD/cctr_raw}"
export cctr_preprocessed="${cctr_preprocessed:-$PWD/cctr_preprocessed}"
export cctr_results="${cctr_results:-$PWD/cctr_results}"
iterations="${DEMO_ITERATIONS:-300}"
dataset=Dataset001_CardiacPhantom
model="$cctr_results/$dataset/CCTRTrainer__labeled2__seed0"
predictions="$cctr_results/$dataset/demo_predictions"
start=$(date +%s)

if [ ! -f "$cctr_raw/$dataset/dataset.json" ]; then
  cctr_generate_phantom -d 1
fi
cctr_plan_and_preprocess -d 1
if [ -f "$model/checkpoint_final.pth" ]; then
  echo "model already trained: $model"
elif [ -f "$model/checkpoint_latest.pth" ]; then
  cctr_train 1 --labeled 2 --iterations "$iterations" --c
else
  cctr_train 1 --labeled 2 --iterations "$iterations"
fi
cctr_predict -i "$cctr_raw/$dataset/imagesTs" -o "$predictions" -m "$model" --continue
cctr_evaluate -ref "$cctr_raw/$dataset/labelsTs" -pred "$predictions" -d 1
echo "demo finished in $(( $(date +%s) - start )) s (after installation); model in $model"
