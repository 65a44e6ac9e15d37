#!/usr/bin/env bash
# The GPU kit: what phiscale's GPU session (benchmarks/gpu_session.sh) needs and the lent GPU machine
# (CPython 3.12, torch, lightning; no network, no apt) lacks, in two git-ignored folders at the repo
# root that travel with the device tool's `carry`:
#   .whl/   wheels for CPython 3.12 manylinux x86-64: MLflow's tracking client with its sqlite store,
#           Hydra, DeepSpeed (built here, no ops) and what they need (benchmarks/gpu_kit_deps.py)
#   .debs/  the Debian 12 packages FFCV builds against and the ffcv 1.0.2 sdist
#           (benchmarks/ffcv_from_debs.sh), plus a cp312 ffcv wheel built here from them when a
#           CPython 3.12 is at hand: the session's fallback if building there fails
# Idempotent: files already there are kept, stale ones removed. Prints the sizes and refuses (exit 1)
# when the kit is over 60 MiB (the device tool carries 64 MiB with the working tree).
#
#   bash benchmarks/gpu_kit.sh              fill and check the kit
#   bash benchmarks/gpu_kit.sh --rehearse   also install it the GPU machine's way into a throwaway
#                                           CPython 3.12 here and use it (needs a python3.12)
# PYTHON: the project's interpreter (default .venv/bin/python); PYTHON312: a CPython 3.12 to use.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
LIMIT_MIB=${KIT_LIMIT_MIB:-60}  # KIT_LIMIT_MIB: only to test the refusal
WHL=.whl DEBS=.debs
FFCV_WHEEL_GLOB="ffcv-1.0.2-cp312-cp312-*.whl"
rehearse=false
case "${1:-}" in
  "") ;;
  --rehearse) rehearse=true ;;
  *) echo "gpu_kit.sh: unknown argument '$1'; use no argument or --rehearse" >&2; exit 2 ;;
esac
say() { echo "gpu_kit: $*"; }

# A CPython 3.12 with its headers, in a throwaway venv holding setuptools (FFCV's one build need).
py312_venv() {
  local venv=${TMPDIR:-/tmp}/phiscale-kit-py312 c
  if [ ! -x "$venv/bin/python" ]; then
    for c in ${PYTHON312:-} python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12; do
      [ -n "$c" ] && "$c" -c 'import sys, sysconfig, os; assert sys.version_info[:2] == (3, 12)
assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' 2>/dev/null || continue
      "$c" -m venv "$venv" && "$venv/bin/python" -m pip install -q --disable-pip-version-check setuptools wheel &&
        break
      rm -rf "$venv"
    done
  fi
  [ -x "$venv/bin/python" ] && echo "$venv/bin/python"
}

say "wheels for CPython 3.12 -> $WHL/"
"$PY" benchmarks/gpu_kit_deps.py fetch "$WHL"

say "Debian packages and the ffcv sdist -> $DEBS/"
PIP_PYTHON=$PY APT_OPTS="-o APT::Sandbox::User=root" bash benchmarks/ffcv_from_debs.sh fetch "$DEBS"

if ! compgen -G "$DEBS/$FFCV_WHEEL_GLOB" >/dev/null; then
  if py312=$(py312_venv); then
    say "building the fallback ffcv wheel with $py312"
    tmp=$(mktemp -d)
    bash benchmarks/ffcv_from_debs.sh build "$DEBS" "$tmp/prefix" "$py312" "$tmp/wheel"
    unzip -q -d "$tmp/ffcv" "$tmp"/wheel/ffcv-*.whl
    bash benchmarks/ffcv_from_debs.sh isolation "$tmp/prefix" "$tmp"/ffcv/ffcv/_libffcv*.so
    mv "$tmp"/wheel/ffcv-*.whl "$DEBS/"
    rm -rf "$tmp"
  else
    say "no CPython 3.12 with headers here: no fallback ffcv wheel (the session builds it there)"
  fi
fi

say "sizes:"
du -sh "$WHL" "$DEBS"
total=$(du -cb "$WHL" "$DEBS" | tail -1 | cut -f1)
total_mib=$(( (total + 2**20 - 1) / 2**20 ))
if [ "$total" -gt $((LIMIT_MIB * 2**20)) ]; then
  echo "gpu_kit: the kit is ${total_mib} MiB, over the ${LIMIT_MIB} MiB limit; drop a package from benchmarks/gpu_kit_deps.py ROOTS" >&2
  exit 1
fi
say "total ${total_mib} MiB (limit ${LIMIT_MIB} MiB)"
"$PY" benchmarks/gpu_kit_deps.py check "$WHL"
say "ready: $(ls "$WHL" | wc -l) wheels, $(ls "$DEBS"/*.deb | wc -l) .debs"

$rehearse || exit 0
# ---- the GPU machine's install path, on a CPython 3.12 here (torch left out: too big to fetch) ----
py312=$(py312_venv) || { echo "gpu_kit: --rehearse needs a CPython 3.12 (set PYTHON312)" >&2; exit 1; }
say "rehearsal with $py312"
# The GPU machine's own packages that the kit's wheels import, from PyPI, torch aside.
mapfile -t base < <("$PY" benchmarks/gpu_kit_deps.py preinstalled "$WHL" | grep -vx torch)
"$py312" -m pip install -q --disable-pip-version-check "${base[@]}"
site=$(mktemp -d)/site
trap 'rm -rf "$(dirname "$site")"' EXIT
# The session's install line, verbatim.
"$py312" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$WHL"/*.whl
bash benchmarks/ffcv_from_debs.sh install "$DEBS" "$(dirname "$site")/prefix" "$py312" "$site"
bash benchmarks/ffcv_from_debs.sh isolation "$(dirname "$site")/prefix" "$site"/ffcv/_libffcv*.so
LD_LIBRARY_PATH=$(bash benchmarks/ffcv_from_debs.sh libpath "$(dirname "$site")/prefix") PYTHONPATH="$site:$PWD/src" \
  "$py312" benchmarks/gpu_kit_deps.py smoke "$(dirname "$site")"
PYTHONPATH="$site" "$py312" benchmarks/gpu_kit_deps.py installed "$WHL" || true  # torch is missing here
say "rehearsal passed"
