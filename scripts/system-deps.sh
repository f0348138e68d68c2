#!/usr/bin/env bash
# System packages the build needs, installed only when missing:
#   libopenblas-pthread-dev  the thread-safe OpenBLAS the embedder and the
#                            llm-runner link statically (blas/build.rs)
# Runs apt-get when root (CI, containers) and sudo otherwise.
set -euo pipefail
lib="${RAGMESH_OPENBLAS_LIB_DIR:-/usr/lib/x86_64-linux-gnu/openblas-pthread}/libopenblas.a"
[ -f "$lib" ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "system-deps: $lib is missing and this is not a Debian/Ubuntu system: install a static thread-safe OpenBLAS and set RAGMESH_OPENBLAS_LIB_DIR" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
echo "system-deps: installing libopenblas-pthread-dev"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -q libopenblas-pthread-dev >/dev/null 2>&1 || {
  $sudo apt-get update -q >/dev/null
  $sudo apt-get install -y -q libopenblas-pthread-dev >/dev/null
}
[ -f "$lib" ] || { echo "system-deps: $lib still missing after install" >&2; exit 1; }
