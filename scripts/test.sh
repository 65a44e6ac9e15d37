#!/usr/bin/env bash
# The test suite as CI runs it: everything except GPU tests (run those on a lent GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
export PHISCALE_CACHE=${PHISCALE_CACHE:-$PWD/.cache/phiscale}
exec .venv/bin/pytest -m "not gpu" "$@"
