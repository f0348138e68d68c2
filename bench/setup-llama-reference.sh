#!/usr/bin/env bash
# llama.cpp for reference checks and the runner benchmark: the
# llama-cpp-python package builds it from source (several minutes on
# 2 cores) into a venv outside the clone.
set -euo pipefail
VENV="${RAGMESH_LLAMA_VENV:-/var/tmp/ragmesh-llama-venv}"
if ! "$VENV/bin/python" -c 'import llama_cpp, numpy' 2>/dev/null; then
  python3 -m venv "$VENV"
  CMAKE_ARGS="-DGGML_NATIVE=ON" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$VENV/bin/pip" install -q llama-cpp-python numpy
fi
echo "$VENV/bin/python"
