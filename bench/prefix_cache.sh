#!/usr/bin/env bash
# The runner's prefix cache off vs on, in one invocation (the same model,
# the same workloads, one after the other): a 10-turn chat resending its
# history (time to first token per turn) and 16 concurrent 5-turn
# sessions (aggregate tokens/s, median time to first token).
# Usage: bench/prefix_cache.sh [turns] [sessions]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ragmesh-target}"
MODEL="${RAGMESH_MODEL_DIR:-$HOME/.cache/ragmesh/models}/SmolLM2-135M-Instruct.Q4_1.gguf"
cargo build --quiet -p ragmesh-llm-runner --example bench_prefix
out="$("$CARGO_TARGET_DIR/debug/examples/bench_prefix" "$MODEL" "${1:-10}" "${2:-16}")"
echo "$out"
python3 - "$out" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
off, on = r["off"], r["on"]
print("turn  ttft off (ms)  ttft on (ms)  cached on  speed-up")
for i, (a, b, c) in enumerate(zip(off["chat_ttft_ms"], on["chat_ttft_ms"], on["chat_cached_tokens"]), 1):
    print(f"{i:>4}  {a:>13}  {b:>12}  {c:>9}  {a / max(b, 1e-9):.2f}x")
print(f"{off['sessions']} sessions x 5 turns: {off['sessions_tok_s']} -> {on['sessions_tok_s']} tok/s "
      f"({on['sessions_tok_s'] / off['sessions_tok_s']:.2f}x), ttft p50 {off['sessions_ttft_p50_ms']} -> "
      f"{on['sessions_ttft_p50_ms']} ms, {on['sessions_cached_tokens']} prompt tokens from the cache")
PY
