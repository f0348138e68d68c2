#!/usr/bin/env bash
# Routing over two runner replicas, least-outstanding vs prefix, in one
# invocation (dev-profile binaries: dependencies and the runner at
# opt-level 3). Usage: bench/routing.sh [sessions] [turns]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ragmesh-target}"
cd "$root"
cargo build --quiet --workspace --bins
exec python3 bench/routing.py "$CARGO_TARGET_DIR" "${1:-32}" "${2:-4}"
