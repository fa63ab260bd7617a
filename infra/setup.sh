#!/usr/bin/env bash
# Set up the project on a fresh machine that has only Python 3.10+:
# a virtual environment in .venv with torch (CPU build) and this package installed
# in editable mode. Idempotent: a second run only checks.
#
#   bash infra/setup.sh        # runtime dependencies
#   bash infra/setup.sh dev    # plus pytest, hypothesis, ruff, and .venv-flower (below)
#   bash infra/setup.sh flower # only .venv-flower: the Flower anchor arm's own environment (infra/setup_flower.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ "${1:-}" = "flower" ]; then
  exec bash infra/setup_flower.sh
fi
extra=""
[ "${1:-}" = "dev" ] && extra="[dev]"

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating virtual environment .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
# Pin torch so the CPU build is used (an unpinned torch pulls several GB of CUDA wheels).
echo "[setup] installing torch==2.13.0 and lora-swarm${extra} (editable) into .venv"
.venv/bin/python -m pip install --disable-pip-version-check --progress-bar on "torch==2.13.0" -e ".${extra}"
echo "[setup] done: $(.venv/bin/python -c 'import torch, transformers, peft, ray; print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, ray {ray.__version__}")')"
if [ "${1:-}" = "dev" ]; then
  # The dashboard's browser test drives Debian's Chromium headless (no browser download at run time).
  if [ ! -x /usr/bin/chromium ]; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
      echo "[setup] installing Debian's chromium for the dashboard's browser test"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
      echo "[setup] /usr/bin/chromium is missing and apt-get (as root) is not available: the browser test will be skipped"
    fi
  fi
  bash infra/setup_flower.sh  # the tests run the Flower anchor arm (tests/swarm/experiment/test_flower_arm.py)
fi
