#!/usr/bin/env bash
# Installs cctrnet and what it needs into the project environment (./.venv, created when no environment is
# active; see scripts/environment.sh). torch first: a torch already in that environment is kept, otherwise
# the build pinned below (the one on this project's machines) or, with TORCH_INDEX_URL, that index's build.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/environment.sh
echo "installing into $CCTR_ENVIRONMENT"
pip_install=("$CCTR_PYTHON" -m pip install -q --disable-pip-version-check)
installed_torch="$("$CCTR_PYTHON" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true)"
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  "${pip_install[@]}" --index-url "$TORCH_INDEX_URL" torch torchvision
elif [ -z "$installed_torch" ]; then
  "${pip_install[@]}" torch==2.14.1 torchvision==0.29.1
fi
echo "torch $("$CCTR_PYTHON" -c 'import importlib.metadata as m; print(m.version("torch"))'); for another build (CUDA, ROCm, CPU-only) run TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 bash scripts/install.sh (any index of pytorch.org/get-started), or install torch into $CCTR_ENVIRONMENT first: a torch found there is kept"
"${pip_install[@]}" -e ".[test]"
