#!/usr/bin/env bash
# Create .venv in the project root and install banditroute with its test tools.
#
# torch is installed first and pinned to 2.13.0, a CPU build; sentence-transformers
# then accepts it instead of pulling the much larger default (CUDA) build.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}

if [ ! -x "$root/.venv/bin/python" ]; then
    "$python" -m venv "$root/.venv"
fi

"$root/.venv/bin/python" -m pip install --quiet --upgrade pip
"$root/.venv/bin/python" -m pip install --quiet "torch==2.13.0"
"$root/.venv/bin/python" -m pip install --quiet -e "$root[dev]"
echo "banditroute installed in $root/.venv"
