#!/usr/bin/env bash
# The GPU acceptance check (see benchmarks/gpu_check.py for what it prints):
#   benchmarks/gpu_check.sh [--nanogpt PATH] [--text input.txt] [--skip PHASE,...] [--rehearse]
# Uses $PYTHON, else the project's .venv when there is one, else the python on PATH.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-$here/../.venv/bin/python}"
[ -x "$py" ] || py="$(command -v python3 || command -v python)"
exec "$py" -P "$here/gpu_check.py" "$@"
