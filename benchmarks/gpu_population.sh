#!/usr/bin/env bash
# Issue 12, section 2: LS, CTS and CCT-R with one labeled patient of the ACDC-like population (appearance
# version 2, the runner's dataset acdc2, seed 0) at a budget the 2-core CPU cannot afford, on one GPU, in
# under 10 minutes including data generation, preprocessing and registration.
#
# The same runner as the CPU tables (benchmarks/reproduce.py), the same generator command and the same CPU plan
# (so the networks, patch and batch are the CPU rows' own), only with --device cuda and more iterations:
#   1. prepare the dataset and time a 100-iteration CCT-R (the slowest of the three),
#   2. choose the budget that lets the three trainings side by side end inside the time left
#      (at most GPU_POPULATION_MAX_ITERATIONS, the paper's 30,000), in multiples of 500,
#   3. train, predict and evaluate LS, CTS and CCT-R at that budget, three workers on the one GPU,
#   4. print the table; the work folder's reproduce_core.md/.json and the job records go to $OUT (or
#      benchmarks/results/) for documentation/benchmarks.md.
#
#   bash benchmarks/gpu_population.sh                       # on the GPU machine, needs CUDA
#   GPU_POPULATION_DEVICE=cpu GPU_POPULATION_SECONDS=900 GPU_POPULATION_MAX_ITERATIONS=40 \
#       GPU_POPULATION_WORK=/tmp/pop bash benchmarks/gpu_population.sh   # the plumbing, on any machine
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PYTHON="${PYTHON:-python3}"
DEVICE="${GPU_POPULATION_DEVICE:-cuda}"
TOTAL_SECONDS="${GPU_POPULATION_SECONDS:-540}"          # the whole script, a margin under the 10-minute call
MAX_ITERATIONS="${GPU_POPULATION_MAX_ITERATIONS:-30000}"
PROBE_ITERATIONS="${GPU_POPULATION_PROBE_ITERATIONS:-100}"
WORK="${GPU_POPULATION_WORK:-/tmp/cctr_gpu_population}"
RESULTS="${OUT:-benchmarks/results}"
CONCURRENCY_SLOWDOWN="${GPU_POPULATION_SLOWDOWN:-1.6}"   # three trainings sharing the GPU and the cores
started=$(date +%s)
mkdir -p "$RESULTS"
common=(--datasets acdc2 --labeled 1 --seeds 0 --device "$DEVICE" --work-dir "$WORK" --no-publish)
[ "$DEVICE" = cuda ] && { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true; }

echo "== 1. prepare acdc2 and time ${PROBE_ITERATIONS} CCT-R iterations on ${DEVICE}"
"$PYTHON" benchmarks/reproduce.py "${common[@]}" --methods CCTR --iterations "$PROBE_ITERATIONS" --workers 1 || exit 1
probe="$WORK/jobs/acdc2__CCTRTrainer__L1__s0__it${PROBE_ITERATIONS}.json"

echo "== 2. the budget"
ITERATIONS=$("$PYTHON" - "$probe" "$started" "$TOTAL_SECONDS" "$MAX_ITERATIONS" "$CONCURRENCY_SLOWDOWN" <<'PY'
import json, sys, time
probe, started, total, largest, slowdown = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
record = json.load(open(probe))
step = record["train_seconds_per_iteration"]
outside = record["wall_seconds"] - step * record["num_iterations"]  # start-up, prediction, evaluation
left = total - (time.time() - started) - 1.5 * outside
budget = int(left / (step * slowdown) // 500 * 500) if left > 0 else 0
budget = min(largest, budget) if largest >= 500 else largest  # a plumbing run asks for fewer than 500
print(budget)
print(f"CCT-R {step:.4f} s/iteration alone, {outside:.0f} s outside training, {left:.0f} s left -> {budget} iterations",
      file=sys.stderr)
PY
)
if [ -z "$ITERATIONS" ] || [ "$ITERATIONS" -lt 1 ]; then
  echo "no time left for a budget above the probe; the probe's record is in $probe"; exit 1
fi

echo "== 3. LS, CTS and CCT-R at ${ITERATIONS} iterations, side by side"
left=$(( TOTAL_SECONDS - ($(date +%s) - started) ))
timeout "$left" "$PYTHON" benchmarks/reproduce.py "${common[@]}" --methods LS CTS CCTR --iterations "$ITERATIONS" \
    --workers 3
status=$?
[ "$status" -eq 124 ] && echo "the trainings ran out of time; finished jobs are in $WORK/jobs"

echo "== 4. results"
cp "$WORK"/reproduce_core.md "$WORK"/reproduce_core.json "$RESULTS"/ 2>/dev/null
tar -czf "$RESULTS/gpu_population_jobs.tar.gz" -C "$WORK" jobs 2>/dev/null
cat "$WORK/reproduce_core.md" 2>/dev/null
echo "device $DEVICE, ${ITERATIONS} iterations, exit $status, $(( $(date +%s) - started )) s in all"
