#!/usr/bin/env bash
# The GPU check in one command, for a CUDA machine with no internet (under 8 minutes on one GPU):
#   bash benchmarks/gpu_check.sh [--out gpu_check.json] [--dry-run]
# Writes one JSON (see benchmarks/gpu_check.py for its sections) and exits non-zero if a section
# failed. --dry-run runs the same steps on the CPU with tiny settings (the test suite does).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export HF_HUB_OFFLINE=1  # nothing is downloaded: fail at once instead of retrying
export PATH="$(dirname "$PYTHON"):$PATH"
exec "$PYTHON" benchmarks/gpu_check.py "$@"
