#!/usr/bin/env bash
# The GPU check of issue 14: the CUDA-marked tests, then benchmarks/gpu_check.py (training, registration and
# prediction speed, peak GPU memory), a table on stdout and one JSON in benchmarks/results/.
# Budget: under 6 minutes on one H100/H200-class GPU (tests <= 2 min, benchmark <= 4 min, each under a timeout
# so one hang cannot eat the other's time). On a machine without a GPU: bash benchmarks/gpu_check.sh --smoke
# (tiny sizes on the CPU; the CUDA tests are then skipped).
#
#   bash benchmarks/gpu_check.sh            # full check, needs CUDA
#   bash benchmarks/gpu_check.sh --smoke    # any machine (set GPU_CHECK_BENCH_SECONDS=1200 on a slow CPU)
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-python}"
STAMP="$(date +%Y%m%d_%H%M%S)"
mkdir -p benchmarks/results
TESTS_JSON="benchmarks/results/gpu_check_tests_${STAMP}.json"
OUT_JSON="benchmarks/results/gpu_check_${STAMP}.json"
TESTS_SECONDS="${GPU_CHECK_TESTS_SECONDS:-120}"
BENCH_SECONDS="${GPU_CHECK_BENCH_SECONDS:-230}"

"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" || true
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

echo "== CUDA-marked tests (pytest -m cuda, at most ${TESTS_SECONDS} s)"
started=$(date +%s)
timeout "$TESTS_SECONDS" "$PYTHON" -m pytest -q -m cuda tests -p no:cacheprovider 2>&1 | tee "benchmarks/results/gpu_check_tests_${STAMP}.log" | tail -25
tests_status=${PIPESTATUS[0]}
summary_line="$(grep -E '(passed|failed|skipped|error|no tests ran)' "benchmarks/results/gpu_check_tests_${STAMP}.log" | tail -1)"
"$PYTHON" - "$TESTS_JSON" "$tests_status" "$(( $(date +%s) - started ))" "$summary_line" <<'PY'
import json, sys
path, status, seconds, line = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
json.dump({"exit_status": status, "timed_out": status == 124, "seconds": seconds, "summary": line.strip("= ")},
          open(path, "w"), indent=2)
PY

echo "== benchmark (at most ${BENCH_SECONDS} s)"
timeout "$BENCH_SECONDS" "$PYTHON" benchmarks/gpu_check.py --output "$OUT_JSON" --pytest-json "$TESTS_JSON" "$@"
bench_status=$?
[ "$bench_status" -eq 124 ] && echo "benchmark timed out; the sections finished before are in $OUT_JSON"
echo "tests: exit $tests_status ($summary_line); benchmark: exit $bench_status; results: $OUT_JSON"
[ "$tests_status" -eq 0 ] || [ "$tests_status" -eq 5 ] || exit 1   # 5: no CUDA test collected (smoke on CPU)
exit "$bench_status"
