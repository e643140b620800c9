#!/usr/bin/env bash
# Installs cctrnet with its test extras into the project environment and runs the whole test suite with it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
source scripts/environment.sh
"$CCTR_PYTHON" -m pytest -q tests "$@"
