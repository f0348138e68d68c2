#!/usr/bin/env bash
# llama.cpp's `llama-server` (the serving peer of the prefix-cache
# benchmark), built from the llama.cpp tree vendored in the
# llama-cpp-python source package (fetched with pip, built with CMake),
# outside the clone. AVX2 + AVX-512 (VNNI) explicitly rather than
# GGML_NATIVE: on this project's VMs the native build picks up features the
# CPU reports but the VM does not allow (AMX) and dies with SIGILL. Several minutes on 2 cores the first
# time; prints the binary's path.
set -euo pipefail
DIR="${RAGMESH_LLAMA_SERVER_DIR:-/var/tmp/ragmesh-llama-server}"
BIN="$DIR/build/bin/llama-server"
if [ ! -x "$BIN" ] || ! "$BIN" --version >/dev/null 2>&1; then
  if ! command -v cmake >/dev/null; then
    apt-get update -qq >&2 && apt-get install -y -qq cmake >&2
  fi
  mkdir -p "$DIR"
  python3 -m pip download -q --no-deps --no-binary :all: -d "$DIR" "llama-cpp-python==0.3.36" >&2
  tar -xzf "$DIR"/llama_cpp_python-0.3.36.tar.gz -C "$DIR"
  src="$DIR/llama_cpp_python-0.3.36/vendor/llama.cpp"
  simd="-DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
  if grep -q avx512_vnni /proc/cpuinfo; then
    simd="$simd -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON"
  fi
  # shellcheck disable=SC2086
  cmake -S "$src" -B "$DIR/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF $simd -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON >&2
  cmake --build "$DIR/build" --target llama-server -j "$(nproc)" >&2
fi
echo "$BIN"
