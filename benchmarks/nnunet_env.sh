#!/usr/bin/env bash
# Creates nnU-Net v2's own virtual environment for the benchmarks, outside the repository.
# nnunetv2 is a tool we compare against, not a dependency of cctrnet: never install it into cctrnet's environment.
# --system-site-packages reuses the installed torch, so nothing large is downloaded.
#
#   bash benchmarks/nnunet_env.sh            # creates (or reuses) the environment, prints its path
#   CCTR_BENCH_NNUNET_VENV=/some/folder NNUNET_VERSION=2.8.1 bash benchmarks/nnunet_env.sh
set -euo pipefail

venv="${CCTR_BENCH_NNUNET_VENV:-$HOME/.cache/cctrnet-bench/venv-nnunet}"
version="${NNUNET_VERSION:-2.8.1}"
python="${PYTHON:-python3}"

if [[ -x "$venv/bin/nnUNetv2_plan_and_preprocess" ]] \
   && [[ "$("$venv/bin/python" -c 'from importlib import metadata; print(metadata.version("nnunetv2"))' 2>/dev/null)" == "$version" ]]; then
    echo "nnU-Net v2 $version already installed in $venv"
else
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv --system-site-packages "$venv"
    "$venv/bin/python" -m pip install --quiet "nnunetv2==$version"
    echo "installed nnU-Net v2 $version in $venv"
fi
"$venv/bin/python" -c 'import torch; print("torch", torch.__version__, "(shared with the system environment)")'
echo "$venv"
