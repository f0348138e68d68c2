#!/usr/bin/env bash
# Gateway overhead vs calling a zero-work upstream directly (same run, oha),
# and the cost of tracing: the same gateway with OTLP export on to a local
# receiver (ragmesh-otlp-receiver), in the same rounds.
# Release binaries: this measures the serving path, not a debug build.
# Usage: bench/gateway_overhead.sh [rate=2000] [seconds=10] [rounds=3]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# exported: the cargo build below must write where the paths below read
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ragmesh-target}"
target="$CARGO_TARGET_DIR"
tools="${RAGMESH_TOOLS:-$HOME/.cache/ragmesh/tools}"
cd "$root"
oha="$(command -v oha || true)"
if [[ -z "$oha" ]]; then
  oha="$tools/bin/oha"
  if [[ ! -x "$oha" ]]; then
    echo "installing oha into $tools (once)" >&2
    CARGO_TARGET_DIR="$tools/target" cargo install oha --locked --root "$tools"
  fi
fi
cargo build --release -p ragmesh-gateway -p ragmesh-tests \
  --bin ragmesh-gateway --bin ragmesh-stub-upstream --bin ragmesh-otlp-receiver
exec python3 bench/gateway_overhead.py "$target/release/ragmesh-gateway" \
  "$target/release/ragmesh-stub-upstream" "$oha" "${1:-2000}" "${2:-10}" "${3:-3}" \
  "$target/release/ragmesh-otlp-receiver"
