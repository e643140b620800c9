#!/usr/bin/env bash
# Copies finished benchmark records into benchmarks/records/<work folder name>/ (benchmarks/README.md, "Records"):
# jobs/*.json, prepare/*.json and reruns/*.json (repeated runs kept beside the record) of the reproduction runner,
# seen_vs_unseen.json (benchmarks/seen_vs_unseen_benchmark.py), results.json and atlas_properties.json of the
# suggestion benchmark, and per prepared dataset its registration choice and a summary of its registration report
# (without the per-pair lists). Usage: bash benchmarks/records/save.sh WORK_DIR [WORK_DIR ...]
set -euo pipefail
records="$(cd "$(dirname "$0")" && pwd)"
for work in "$@"; do
  out="$records/$(basename "$work")"
  for sub in jobs prepare reruns; do
    if compgen -G "$work/$sub/*.json" > /dev/null; then mkdir -p "$out/$sub" && cp "$work/$sub"/*.json "$out/$sub/"; fi
  done
  for file in results.json atlas_properties.json summary.json seen_vs_unseen.json; do
    if [ -f "$work/$file" ]; then mkdir -p "$out" && cp "$work/$file" "$out/"; fi
  done
  for registration in "$work"/cctr_preprocessed/*/registration/2d; do
    [ -f "$registration/registration_report.json" ] || continue
    dataset="$(basename "$(dirname "$(dirname "$registration")")")"
    mkdir -p "$out/registration/$dataset"
    cp "$registration/registration_choice.json" "$out/registration/$dataset/" 2>/dev/null || true
    python3 - "$registration/registration_report.json" "$out/registration/$dataset/registration_summary.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
methods = {m: {k: v for k, v in x.items() if k not in ("pairs", "registered_label_dice")}
           for m, x in report["methods"].items()}
json.dump({"labeled_cases": report.get("labeled_cases"), "methods": methods}, open(sys.argv[2], "w"), indent=1)
PY
  done
done
du -sh "$records"
