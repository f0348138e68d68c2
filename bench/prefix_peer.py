"""ragmesh (all-in-one gateway, prefix cache on) vs llama.cpp's llama-server
(prompt cache on, 16 slots, continuous batching), one after the other in
one invocation, over HTTP (`/v1/chat/completions`, streamed).

Workloads, at 1 stream (requests one after another) and 16 streams (all at
once), each with prompts of its own so "cold" is cold:
- cold: 16 chat prompts of ~350 tokens, different from their first word;
- repeated: the same 16 prompts sent again;
- shared: one ~300-token preamble, then 16 different questions.
Every answer is 128 tokens (greedy, `ignore_eos`). Reported per row: time to
first token p50 and aggregate output tokens/s (all tokens over the row's
wall time).

Usage: prefix_peer.py GATEWAY_BIN LLAMA_SERVER_BIN MODEL.gguf
"""
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time

gateway_bin, llama_bin, model = sys.argv[1:4]
N, TOKENS = 16, 128

FILLER = ("The harbour ledger records every ship that moors at the northern piers, the fee it paid, the "
          "captain who signed, and the weather on the day of arrival. ")


def prompt(tag, i):
    # the tag first: prompts of different tags share nothing
    return f"[{tag}-{i}] " + FILLER * 9 + f"Question {i}: what does the ledger record about ship {i}?"


def shared(tag, i):
    return FILLER * 9 + f"[{tag}] Question {i}: which pier did ship {i} use?"


def chat(addr, text):
    host, port = addr.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=600)
    body = json.dumps({"model": "SmolLM2-135M-Instruct.Q4_1", "stream": True, "max_tokens": TOKENS, "temperature": 0,
                       "ignore_eos": True, "messages": [{"role": "user", "content": text}]})
    t0 = time.perf_counter()
    c.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
    r = c.getresponse()
    assert r.status == 200, (r.status, r.read()[:300])
    ttft, pieces = None, 0
    for raw in r:
        line = raw.decode(errors="replace").strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        for ch in chunk.get("choices", []):
            if (ch.get("delta") or {}).get("content"):
                pieces += 1
                if ttft is None:
                    ttft = time.perf_counter() - t0
    return ttft if ttft is not None else time.perf_counter() - t0


def row(addr, texts, streams):
    ttfts, lock = [], threading.Lock()
    t0 = time.perf_counter()
    if streams == 1:
        for t in texts:
            ttfts.append(chat(addr, t))
    else:
        def one(t):
            v = chat(addr, t)
            with lock:
                ttfts.append(v)
        threads = [threading.Thread(target=one, args=(t,)) for t in texts]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    wall = time.perf_counter() - t0
    return {"ttft_p50_ms": round(statistics.median(ttfts) * 1e3, 1),
            "tok_s": round(len(texts) * TOKENS / wall, 1)}


def workloads(addr, engine):
    out = {}
    chat(addr, "Hello.")  # warm-up
    for streams in (1, N):
        tag = f"{engine}{streams}"
        cold = [prompt(tag, i) for i in range(N)]
        out[f"cold/{streams}"] = row(addr, cold, streams)
        out[f"repeated/{streams}"] = row(addr, cold, streams)
        out[f"shared/{streams}"] = row(addr, [shared(tag, i) for i in range(N)], streams)
    return out


def start(args, ready):
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in p.stdout:
        got = ready(line)
        if got:
            threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
            return p, got
    raise SystemExit(f"{args[0]} did not start")


results = {}
data = tempfile.mkdtemp(prefix="ragmesh-bench-")
gw, addr = start([gateway_bin, "--port", "0", "--data-dir", data, "--llm-model", model],
                 lambda l: l.split("http=")[1].split()[0] if " listening " in l else None)
results["ragmesh"] = workloads(addr, "r")
gw.kill()
gw.wait()
port = "18431"
ls, addr = start([llama_bin, "-m", model, "-t", "2", "-tb", "2", "-np", str(N), "-c", str(N * 1024), "-cb",
                  "--host", "127.0.0.1", "--port", port],
                 lambda l: f"127.0.0.1:{port}" if "listening on http" in l
                 else None)
results["llama-server"] = workloads(addr, "l")
ls.kill()
ls.wait()

print(json.dumps(results))
print("row            ragmesh ttft p50  llama-server ttft p50   ragmesh tok/s  llama-server tok/s")
for k in results["ragmesh"]:
    r, l = results["ragmesh"][k], results["llama-server"][k]
    print(f"{k:<13} {r['ttft_p50_ms']:>14} ms  {l['ttft_p50_ms']:>17} ms  {r['tok_s']:>13}  {l['tok_s']:>18}"
          f"   ttft {l['ttft_p50_ms'] / r['ttft_p50_ms']:.2f}x, tok/s {r['tok_s'] / l['tok_s']:.2f}x")
