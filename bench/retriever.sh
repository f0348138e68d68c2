#!/usr/bin/env bash
# Retriever benchmark: ingest, HNSW build, search p50/p99 and recall@10
# against exact brute force in the same run. Usage: bench/retriever.sh [points] [queries]
# Built in the dev profile, whose dependencies (the Qdrant engine) and the
# retriever crate are compiled at opt-level 3 (see Cargo.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ragmesh-target}"
exec cargo run --quiet -p ragmesh-retriever --example bench_retriever -- "${1:-100000}" "${2:-500}"
