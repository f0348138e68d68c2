#!/usr/bin/env bash
# End-to-end RAG benchmark: the all-in-one gateway (dev profile binary:
# dependencies at opt-level 3, as `make test` builds it) answering the demo
# profile vs the plain model, same run. Usage: bench/gateway_rag.sh [runs]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# exported: the cargo build below must write where the paths below read
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ragmesh-target}"
target="$CARGO_TARGET_DIR"
cd "$root"
cargo build --workspace --bins
exec python3 bench/gateway_rag.py "$target/debug/ragmesh-gateway" "$root" "${1:-2}"
