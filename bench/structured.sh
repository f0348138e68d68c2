#!/usr/bin/env bash
# Constrained decoding vs free decoding, in one invocation (one loaded
# model): aggregate decode tokens/s at 1 and 16 streams with a JSON-Schema
# constraint and without, and the compile time of the test schemas.
# Usage: bench/structured.sh [tokens]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ragmesh-target}"
MODEL="${RAGMESH_MODEL_DIR:-$HOME/.cache/ragmesh/models}/SmolLM2-135M-Instruct.Q4_1.gguf"
cargo build --quiet -p ragmesh-llm-runner --example bench_structured
out="$("$CARGO_TARGET_DIR/debug/examples/bench_structured" "$MODEL" "${1:-128}")"
echo "$out"
python3 - "$out" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
print("streams  free tok/s  constrained tok/s  ratio")
for row in r["rows"]:
    print(f"{row['streams']:>7}  {row['free_tok_s']:>10}  {row['constrained_tok_s']:>17}  {row['ratio']:.2f}x")
print(f"schema compile: p50 {r['compile_ms_p50']} ms, max {r['compile_ms_max']} ms over {r['compiles']} compiles")
PY
