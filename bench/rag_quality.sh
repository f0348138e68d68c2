#!/usr/bin/env bash
# RAG answer quality: the all-in-one gateway (release binary, what `make run`
# serves) answering questions about an invented corpus with retrieval.
# Usage: bench/rag_quality.sh [--max-tokens N] [--out FILE.json] [--model NAME | --plain]
#        [--template FILE.j2] [--extra '{"repetition_penalty": 1.0}'] [--top-k K] [--no-rag] [-v]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# exported: the cargo build below must write where the path below reads
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ragmesh-target}"
cd "$root"
cargo build --release -p ragmesh-gateway
exec python3 bench/rag_quality.py "$CARGO_TARGET_DIR/release/ragmesh-gateway" "$@"
