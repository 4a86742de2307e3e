#!/usr/bin/env bash
# Create or refresh kdref's virtual environment in .venv (sourced by scripts/test and scripts/verify).
#
# torch is installed only if the environment cannot import one, and then as torch==2.13.0: a bare
# `torch` requirement would make pip fetch a multi-GB CUDA build. Where the base interpreter already
# has torch (Colab, a CUDA workstation), the venv sees it through --system-site-packages and pip
# never replaces it.
set -euo pipefail
KDREF_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KDREF_PY="$KDREF_ROOT/.venv/bin/python"
base_python=${PYTHON:-python3}

if [ ! -x "$KDREF_PY" ]; then
  if "$base_python" -c "import torch" >/dev/null 2>&1; then
    echo "kdref: creating .venv on top of the torch already installed for $base_python" >&2
    "$base_python" -m venv --system-site-packages "$KDREF_ROOT/.venv"
  else
    echo "kdref: creating .venv" >&2
    "$base_python" -m venv "$KDREF_ROOT/.venv"
  fi
fi
if ! "$KDREF_PY" -c "import torch" >/dev/null 2>&1; then
  echo "kdref: installing torch==2.13.0 (no torch found)" >&2
  "$KDREF_PY" -m pip install --quiet "torch==2.13.0"
fi
"$KDREF_PY" -m pip install --quiet --disable-pip-version-check -e "$KDREF_ROOT[test,docs]"
export KDREF_ROOT KDREF_PY
