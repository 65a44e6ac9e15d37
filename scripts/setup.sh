#!/usr/bin/env bash
# One idempotent set-up for a fresh Debian machine (run as root) or an existing checkout:
# apt packages -> .venv -> torch==2.13.0 (local CPU wheel, explicitly first) -> the project.
# Fast when nothing changed: each step is skipped when its stamp is current.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  pkg-config libturbojpeg0-dev libopencv-dev      # FFCV builds from source against these
  g++ ninja-build                                 # DeepSpeed JIT-compiles its CPU ops
  munge slurmctld slurmd slurm-client             # the local SLURM testbed (slurm/testbed)
  chromium                                        # browser test of the MLflow UI
  postgresql                                      # phiscale-server's database (PostgreSQL 15)
  dataset-fashion-mnist                           # data=fashion_mnist: its idx files, no download at run time
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "setup: apt-get install ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.phiscale-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
  "${pip[@]}" --upgrade pip setuptools wheel
  # torch first and pinned, so nothing later pulls a multi-GB CUDA build.
  "${pip[@]}" torch==2.13.0
  # FFCV 1.0.2 has no wheels; its build needs numpy/opencv present (no build isolation).
  "${pip[@]}" numpy cython pkgconfig opencv-python-headless
  "${pip[@]}" --no-build-isolation "ffcv==1.0.2"
  # The project, with psycopg[binary] (phiscale-server's PostgreSQL driver, in pyproject.toml);
  # [docs]: MkDocs and its Material theme, for `make docs` and the site's tests.
  "${pip[@]}" -e ".[dev,ffcv,docs]"
  echo "$want" > "$stamp"
fi
