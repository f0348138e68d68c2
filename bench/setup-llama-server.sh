#!/usr/bin/env bash
# llama.cpp's `llama-server` (the serving peer of the prefix-cache
# benchmark), built from the llama.cpp tree vendored in the
# llama-cpp-python source package (fetched with pip, built with CMake,
# GGML_NATIVE=ON), outside the clone. Several minutes on 2 cores the first
# time; prints the binary's path.
set -euo pipefail
DIR="${RAGMESH_LLAMA_SERVER_DIR:-/var/tmp/ragmesh-llama-server}"
BIN="$DIR/build/bin/llama-server"
if [ ! -x "$BIN" ]; then
  if ! command -v cmake >/dev/null; then
    apt-get update -qq >&2 && apt-get install -y -qq cmake >&2
  fi
  mkdir -p "$DIR"
  python3 -m pip download -q --no-deps --no-binary :all: -d "$DIR" "llama-cpp-python==0.3.36" >&2
  tar -xzf "$DIR"/llama_cpp_python-0.3.36.tar.gz -C "$DIR"
  src="$DIR/llama_cpp_python-0.3.36/vendor/llama.cpp"
  cmake -S "$src" -B "$DIR/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON >&2
  cmake --build "$DIR/build" --target llama-server -j "$(nproc)" >&2
fi
echo "$BIN"
