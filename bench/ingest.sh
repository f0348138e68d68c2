#!/usr/bin/env bash
# Ingest throughput of the all-in-one gateway (release binary, what `make run`
# serves), its embedding ceiling in the same run, and its RSS under an
# overload mix of ~7 MB chat bodies.
# Usage: bench/ingest.sh [--kb 256] [--docs-per-request 4] [--skip-overload]
#        [--gateway-arg=--max-inflight-body-bytes=N] [--out FILE.json] [-v]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# exported: the cargo build below must write where the path below reads
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ragmesh-target}"
cd "$root"
cargo build --release -p ragmesh-gateway
exec python3 bench/ingest.py "$CARGO_TARGET_DIR/release/ragmesh-gateway" "$@"
