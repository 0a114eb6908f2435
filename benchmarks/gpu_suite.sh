#!/usr/bin/env bash
# The GPU check of vireid in one command (see benchmarks/README.md):
#   bash benchmarks/gpu_suite.sh --out runs/gpu_suite       # one CUDA GPU, under 8 minutes, unattended
#   bash benchmarks/gpu_suite.sh --out /tmp/s --cpu-smoke   # every stage at tiny sizes on the CPU
# Writes OUT/gpu_suite.json and OUT/gpu_suite.md and prints the markdown. Other options: --help.
# This checkout's sources come first on PYTHONPATH; PYTHON picks the interpreter (default python3).
# The suite keeps its own budget (450 s of stages on a GPU); the outer timeout (SUITE_HARD_LIMIT_S,
# default 475 s) only guards against a hang: SIGTERM makes the suite record the running stage as
# failed and write the report. Raise it together with --budget-s.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PYTHONPATH="$(dirname "$here")/src${PYTHONPATH:+:$PYTHONPATH}"
exec timeout -k 5 "${SUITE_HARD_LIMIT_S:-475}" "${PYTHON:-python3}" "$here/gpu_suite.py" "$@"
