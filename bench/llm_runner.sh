#!/usr/bin/env bash
# LLM runner vs llama.cpp, same GGUF, 2 threads each, run one after the
# other in this invocation; every figure is the median of interleaved
# rounds. Usage: bench/llm_runner.sh [decode_tokens] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ragmesh-target}"
MODEL="${RAGMESH_MODEL_DIR:-$HOME/.cache/ragmesh/models}/SmolLM2-135M-Instruct.Q4_1.gguf"
PY="$(bench/setup-llama-reference.sh | tail -1)"
# dev profile: dependencies and the runner crate build at opt-level 3 (Cargo.toml)
cargo build --quiet -p ragmesh-llm-runner --example bench_runner
ours="$("$CARGO_TARGET_DIR/debug/examples/bench_runner" "$MODEL" "${1:-128}" "${2:-3}")"
peer="$("$PY" bench/llm_runner_peer.py "$MODEL" "${1:-128}" "${2:-3}")"
echo "$ours"
echo "$peer"
python3 - "$ours" "$peer" <<'PY'
import json, sys
o, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"prefill ({o['prompt_tokens']} tokens): ragmesh {o['prefill_tok_s']} tok/s, llama.cpp {p['prefill_tok_s']} tok/s -> {o['prefill_tok_s']/p['prefill_tok_s']:.2f}x")
print(f"single-stream decode: ragmesh {o['decode_tok_s']} tok/s, llama.cpp {p['decode_tok_s']} tok/s -> {o['decode_tok_s']/p['decode_tok_s']:.2f}x")
for s, v in o["aggregate"].items():
    print(f"aggregate decode, {s} streams: {v} tok/s = {v/o['decode_tok_s']:.2f}x ragmesh single-stream (output incl. prefill: {o['output'][s]} tok/s)")
PY
