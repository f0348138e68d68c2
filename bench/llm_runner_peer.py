"""llama.cpp (llama-cpp-python) on the same GGUF and thread count: prompt
processing of a 512-token prompt and single-stream greedy decode, each the
median of interleaved rounds (3 by default). Prints one JSON line like
bench_runner.rs."""
import json
import statistics
import sys
import time

from llama_cpp import Llama

model, decode = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 128
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
threads = 2
llm = Llama(model_path=model, n_ctx=2048, n_threads=threads, n_threads_batch=threads,
            n_batch=512, verbose=False)
base = "The quick brown fox jumps over the lazy dog while the river runs to the sea. "
ids = llm.tokenize((base * 80).encode(), add_bos=False)[:512]
llm.eval(ids[:8])  # warm-up


def prefill_once():
    llm.reset()
    t = time.perf_counter()
    llm.eval(ids)
    return len(ids) / (time.perf_counter() - t)


def decode_once():
    llm.reset()
    llm.eval(prompt)
    t = time.perf_counter()
    n = 0
    for _ in range(decode - 1):
        tok = llm.sample(temp=0.0)
        llm.eval([tok])
        n += 1
    return n / (time.perf_counter() - t)


prompt = llm.tokenize(b"Once upon a time", add_bos=False)
# medians of interleaved rounds, as bench_runner reports them
prefills, decodes = [], []
for _ in range(rounds):
    prefills.append(prefill_once())
    decodes.append(decode_once())
prefill, decode_s = statistics.median(prefills), statistics.median(decodes)
print(json.dumps({"engine": "llama.cpp", "prompt_tokens": len(ids),
                  "prefill_tok_s": round(prefill, 1), "decode_tok_s": round(decode_s, 1)}))
