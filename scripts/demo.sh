#!/usr/bin/env bash
# The main job end to end on the built-in phantom dataset: install, generate the phantom raw dataset
# (once), check, fingerprint, plan and preprocess it. Data goes under ./cctr_raw, ./cctr_preprocessed
# and ./cctr_results unless those environment variables say otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export cctr_raw="${cctr_raw:-$PWD/cctr_raw}"
export cctr_preprocessed="${cctr_preprocessed:-$PWD/cctr_preprocessed}"
export cctr_results="${cctr_results:-$PWD/cctr_results}"
start=$(date +%s)
if [ ! -f "$cctr_raw/Dataset001_CardiacPhantom/dataset.json" ]; then
  cctr_generate_phantom -d 1
fi
cctr_plan_and_preprocess -d 1
echo "demo finished in $(( $(date +%s) - start )) s (after installation)"
