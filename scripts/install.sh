#!/usr/bin/env bash
# Installs cctrnet and what it needs into the current Python (a virtual environment if one is active).
# torch comes first, pinned to the build that lies on this kind of machine's disk.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
python3 -m pip install -q --disable-pip-version-check -e ".[test]"
