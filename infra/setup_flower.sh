#!/usr/bin/env bash
# The Flower anchor arm's own environment (docs/experiments.md, "The Flower anchor arm"): a second virtual
# environment .venv-flower with Flower's simulation engine, whose pins (ray==2.55.1, protobuf<7, rich<15,
# packaging<26, typer<0.21) conflict with .venv. Exact pins: infra/requirements-flower.txt. Idempotent: a
# second run only checks. Called by `bash infra/setup.sh flower` and `bash infra/setup.sh dev` (so CI has it).
#
#   bash infra/setup_flower.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ ! -x .venv-flower/bin/python ]; then
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "[setup-flower] flwr 1.42 needs Python >= 3.11; $PYTHON is $($PYTHON --version 2>&1) (set PYTHON=...)" >&2
    exit 1
  fi
  echo "[setup-flower] creating virtual environment .venv-flower with $($PYTHON --version)"
  "$PYTHON" -m venv .venv-flower
fi
stamp=.venv-flower/.requirements.sha256  # pip's own no-op check of 80 pins took minutes on a loaded machine
if [ "$(cat "$stamp" 2>/dev/null)" != "$(sha256sum infra/requirements-flower.txt | cut -d' ' -f1)" ]; then
  echo "[setup-flower] installing infra/requirements-flower.txt (torch==2.13.0 CPU, flwr[simulation]==1.42) into .venv-flower"
  .venv-flower/bin/python -m pip install --disable-pip-version-check --progress-bar off -q -r infra/requirements-flower.txt
  sha256sum infra/requirements-flower.txt | cut -d' ' -f1 > "$stamp"
fi
# what the arm's subprocess imports, from this checkout (PYTHONPATH), without ray 2.60 or any pin of .venv
PYTHONPATH=. .venv-flower/bin/python -c 'import swarm.experiment.flower_app, layers.eval' \
  || { echo "[setup-flower] .venv-flower cannot import swarm.experiment.flower_app" >&2; exit 1; }
echo "[setup-flower] done: $(.venv-flower/bin/python -c 'import flwr, ray, torch, peft; print(f"flwr {flwr.__version__}, ray {ray.__version__}, torch {torch.__version__}, peft {peft.__version__}")')"
