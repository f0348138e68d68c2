#!/usr/bin/env bash
# Embedder throughput and latency vs sentence-transformers (PyTorch, CPU),
# same model files, sentences and thread count, in one invocation. The
# machine is noisy, so the two alternate for ROUNDS rounds and the best
# round of each is compared.
#
#   bench/embedder.sh [THREADS=2] [ROUNDS=2]
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-2}"; rounds="${2:-2}"
venv="${REF_VENV:-/var/tmp/ragmesh-ref-venv}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ragmesh-target}"
export HF_HUB_OFFLINE=1
bench/setup-reference.sh
sentences="$(mktemp)"; trap 'rm -f "$sentences"' EXIT
"$venv/bin/python" bench/embedder_sentences.py "$sentences" 1024
cargo bench -q -p ragmesh-embedder --bench embed --no-run 2>/dev/null
results=()
for r in $(seq "$rounds"); do
  results+=("$(cargo bench -q -p ragmesh-embedder --bench embed -- "$sentences" "$threads" 2>/dev/null | tail -1)")
  results+=("$("$venv/bin/python" bench/embedder_peer.py "$sentences" "$threads" 2>/dev/null | tail -1)")
done
printf '%s\n' "${results[@]}" | python3 bench/compare.py
