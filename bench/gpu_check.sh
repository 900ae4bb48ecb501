#!/usr/bin/env bash
# The one command to run on a lent GPU machine (see bench/gpu_check.py): build for this GPU, GPU tests,
# compute-sanitizer, benchmark; logs and gpu_check.json in OUTDIR (default: $OUT, else ./gpu_check_out).
#   bash bench/gpu_check.sh [OUTDIR]
set -uo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" bench/gpu_check.py "$@"
