#!/usr/bin/env bash
# FFCV 1.0.2 on a machine with no apt and no network (the lent GPU machine), from Debian 12 packages
# fetched beforehand on a machine that reaches Debian and PyPI.
#
# Adapted from the checked recipe shared/gpu/ffcv-from-debs.sh, with the same three ideas:
#   - the Debian packages of libturbojpeg and OpenCV core+imgproc (+ their runtime dependencies) are
#     unpacked under a PREFIX, never into /, with dpkg-deb or, where it is missing, Python alone;
#   - a tiny `pkg-config` on PATH answers FFCV's setup.py (it asks `pkg-config --cflags --libs
#     opencv4` and `libturbojpeg`) from that prefix;
#   - <opencv2/opencv.hpp> is shadowed by core + imgproc: FFCV's libffcv.cpp only calls cv::resize,
#     and the full header wants every OpenCV module.
# The libraries find each other through LD_LIBRARY_PATH at run time (no rpath): see `libpath`.
#
#   fetch KIT                            .debs + the ffcv sdist into KIT (apt-get download, pip download)
#   build KIT PREFIX PYTHON WHEEL_DIR    unpack into PREFIX, build an ffcv wheel for PYTHON into WHEEL_DIR
#   install KIT PREFIX PYTHON TARGET     unpack, build, and `pip install --target TARGET` (no index, no deps)
#   libpath PREFIX                       what LD_LIBRARY_PATH must hold for `import ffcv` to load
#   isolation PREFIX SO_FILE             fail unless every library SO_FILE needs, beyond glibc/libstdc++,
#                                        resolves inside PREFIX (ldd with LD_LIBRARY_PATH=libpath)
set -euo pipefail

FFCV_VERSION=1.0.2
# libopencv-core406 -> libblas3 | liblapack3 -> libgfortran5 -> libquadmath0; libglx0 -> libglvnd0,
# libx11-6 -> libxcb1 -> libxau6, libxdmcp6 -> libbsd0 -> libmd0; libtbb12 (apt-cache depends, Debian 12).
DEBS=(
  libopencv-core406 libopencv-imgproc406 libopencv-core-dev libopencv-imgproc-dev
  libturbojpeg0 libturbojpeg0-dev
  libtbb12 libblas3 liblapack3 libgfortran5 libquadmath0
  libglx0 libglvnd0 libx11-6 libxcb1 libxau6 libxdmcp6 libbsd0 libmd0
)
# Libraries every Linux the GPU machine could be has (the C and C++ runtimes and zlib).
SYSTEM_LIBS='^(linux-vdso|ld-linux|libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|libz)\.so'

usage() { sed -n '14,20p' "$0" >&2; exit 2; }
libdir() { echo "$1/usr/lib/x86_64-linux-gnu"; }
libpath() { local l; l=$(libdir "$1"); echo "$l:$l/lapack:$l/blas${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; }

fetch() {
  local kit=$1
  mkdir -p "$kit"
  local name updated=no
  for name in "${DEBS[@]}"; do
    compgen -G "$kit/${name}_*.deb" >/dev/null && continue
    # A fresh machine may have no package lists yet: update them once, then try again.
    (cd "$kit" && apt-get download -q ${APT_OPTS:-} "$name" >/dev/null 2>&1) && continue
    [ $updated = no ] && apt-get update -q >/dev/null && updated=yes
    (cd "$kit" && apt-get download -q ${APT_OPTS:-} "$name" >/dev/null)
  done
  [ -f "$kit/ffcv-$FFCV_VERSION.tar.gz" ] ||
    "${PIP_PYTHON:-python3}" -m pip download -q --no-deps --no-binary :all: "ffcv==$FFCV_VERSION" -d "$kit"
}

unpack() {
  local kit=$1 prefix=$2 deb
  rm -rf "$prefix" && mkdir -p "$prefix/shim/include/opencv2"
  for deb in "$kit"/*.deb; do
    if command -v dpkg-deb >/dev/null; then dpkg-deb -x "$deb" "$prefix"; continue; fi
    # No dpkg: a .deb is an `ar` archive (8-byte magic, then 60-byte member headers) whose
    # data.tar.* member holds the files.
    "$PYTHON" - "$deb" "$prefix" <<'PY'
import io, sys, tarfile
raw, pos = open(sys.argv[1], "rb").read(), 8
while pos < len(raw):
    name, size = raw[pos:pos + 16].decode().strip().rstrip("/"), int(raw[pos + 48:pos + 58])
    if name.startswith("data.tar"):
        tarfile.open(fileobj=io.BytesIO(raw[pos + 60:pos + 60 + size])).extractall(sys.argv[2])
    pos += 60 + size + size % 2
PY
  done
  local l; l=$(libdir "$prefix")
  printf '// FFCV calls cv::resize only: core + imgproc suffice.\n#include <opencv2/core.hpp>\n#include <opencv2/imgproc.hpp>\n' \
    >"$prefix/shim/include/opencv2/opencv.hpp"
  cat >"$prefix/shim/pkg-config" <<EOF
#!/bin/sh
# Answers FFCV's setup.py from $prefix (see benchmarks/ffcv_from_debs.sh).
for a in "\$@"; do case "\$a" in
  opencv4|opencv) echo "-I$prefix/shim/include -I$prefix/usr/include/opencv4 -I$l/opencv4 -L$l -lopencv_imgproc -lopencv_core"; exit 0;;
  libturbojpeg) echo "-I$prefix/usr/include -L$l -lturbojpeg"; exit 0;;
esac; done
echo "\$*: not found"; exit 1
EOF
  chmod +x "$prefix/shim/pkg-config"
}

sdist() { echo "$1/ffcv-$FFCV_VERSION.tar.gz"; }

# --no-build-isolation: the build needs only setuptools (FFCV's setup.py has no other build needs),
# which the target Python has; isolation would ask an index for it.
build() {
  local kit=$1 prefix=$2 out=$4
  unpack "$kit" "$prefix"
  mkdir -p "$out"
  PATH="$prefix/shim:$PATH" "$PYTHON" -m pip wheel -q --no-deps --no-build-isolation --no-index --no-cache-dir \
    -w "$out" "$(sdist "$kit")"
}

install() {
  local kit=$1 prefix=$2 target=$4
  unpack "$kit" "$prefix"
  PATH="$prefix/shim:$PATH" "$PYTHON" -m pip install -q --no-deps --no-build-isolation --no-index --no-cache-dir \
    --no-compile --upgrade --target "$target" "$(sdist "$kit")"
}

isolation() {
  local prefix=$1 so=$2 outside
  outside=$(LD_LIBRARY_PATH=$(libpath "$prefix") ldd "$so" | awk '$2 == "=>" {print $1, $3}' |
    grep -v "^.* $prefix/" | grep -Ev "$SYSTEM_LIBS" || true)
  if [ -n "$outside" ]; then
    echo "ffcv_from_debs: $so loads libraries from outside $prefix: $(echo "$outside" | tr '\n' ' ')" >&2
    return 1
  fi
  LD_LIBRARY_PATH=$(libpath "$prefix") ldd "$so" | grep -q "not found" && {
    echo "ffcv_from_debs: $so has unresolved libraries" >&2; return 1; }
  return 0
}

cmd=${1:-}; shift || true
case "$cmd" in
  fetch) [ $# -eq 1 ] || usage; fetch "$1" ;;
  build | install)
    [ $# -eq 4 ] || usage; PYTHON=$3
    kit=$(cd "$1" && pwd); mkdir -p "$2"; prefix=$(cd "$2" && pwd)
    "$cmd" "$kit" "$prefix" "$3" "$4" ;;
  libpath) [ $# -eq 1 ] || usage; libpath "$1" ;;
  isolation) [ $# -eq 2 ] || usage; isolation "$1" "$2" ;;
  *) usage ;;
esac
