#!/usr/bin/env bash
# The test suite as CI runs it: everything except GPU tests (run those on a lent GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
export PHISCALE_CACHE=${PHISCALE_CACHE:-$PWD/.cache/phiscale}
# --durations: the slowest tests close every run, so a slow CI shows where its minutes went.
exec .venv/bin/pytest -m "not gpu" --durations=40 "$@"
