#!/usr/bin/env bash
# Install cotkit with its test tools into .venv and run the default test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
exec .venv/bin/python -m pytest "$@"
