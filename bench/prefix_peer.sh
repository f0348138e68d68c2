#!/usr/bin/env bash
# ragmesh (prefix cache on) vs llama-server (prompt cache on) over HTTP,
# one after the other in one invocation: cold, repeated and shared-prefix
# chat prompts at 1 and 16 streams. Usage: bench/prefix_peer.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ragmesh-target}"
cd "$root"
MODEL="${RAGMESH_MODEL_DIR:-$HOME/.cache/ragmesh/models}/SmolLM2-135M-Instruct.Q4_1.gguf"
LLAMA="$(bench/setup-llama-server.sh | tail -1)"
cargo build --quiet --workspace --bins
exec python3 bench/prefix_peer.py "$CARGO_TARGET_DIR/debug/ragmesh-gateway" "$LLAMA" "$MODEL"
