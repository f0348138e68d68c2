"""End-to-end RAG through the all-in-one gateway, with the time split.

Starts the gateway binary (argv[1]) with the project's docs ingested, then
streams the same questions through the RAG profile and through the plain
model (the peer: no retrieval, short prompt), greedy, and prints per-stage
figures and the ratios. Standard library only.
"""
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import time

binary, root = sys.argv[1], sys.argv[2]
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 2
MAX_TOKENS = 64
QUESTIONS = [
    "What does make test do?",
    "How does the retriever keep acknowledged writes after a crash?",
    "Which pre-tokenizers does the LLM runner support?",
    "How is the embedder batched?",
    "What does a RAG profile bind?",
]

data = tempfile.mkdtemp(prefix="ragmesh-bench-")
t0 = time.time()
proc = subprocess.Popen(
    [binary, "--port", "0", "--data-dir", data, "--demo-ingest", f"{root}/docs,{root}/README.md"],
    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
)
addr = None
for line in proc.stdout:
    if " listening " in line:
        addr = line.split("http=")[1].strip()
        break
assert addr, "gateway did not start"
print(f"gateway up with the demo collection ingested in {time.time() - t0:.1f} s")
host, port = addr.rsplit(":", 1)


def stream(model, question):
    body = json.dumps({
        "model": model, "stream": True, "max_tokens": MAX_TOKENS, "temperature": 0,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": question}],
    })
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    start = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    ttft = None
    rag = None
    usage = None
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        ev = json.loads(line[6:])
        rag = ev.get("rag", rag)
        if ev.get("usage"):
            usage = ev["usage"]
        ch = ev.get("choices") or []
        if ch and ch[0].get("delta", {}).get("content") and ttft is None:
            ttft = time.perf_counter() - start
    total = time.perf_counter() - start
    conn.close()
    return ttft or total, total, usage, rag


def run(model):
    rows = []
    for _ in range(runs):
        for q in QUESTIONS:
            rows.append(stream(model, q))
    return rows


stream("ragmesh-docs", QUESTIONS[0])  # warm-up
import urllib.request
models = json.load(urllib.request.urlopen(f"http://{addr}/v1/models"))
chat_model = next(m["id"] for m in models["data"] if m.get("type") == "chat")
rag_rows = run("ragmesh-docs")
plain_rows = run(chat_model)
proc.terminate()


def med(xs):
    return statistics.median(xs)


def summarise(name, rows):
    ttft = [r[0] for r in rows]
    decode = [
        (r[2]["completion_tokens"] - 1) / (r[1] - r[0])
        for r in rows if r[2] and r[2]["completion_tokens"] > 1 and r[1] > r[0]
    ]
    prompt = [r[2]["prompt_tokens"] for r in rows if r[2]]
    print(f"{name:>12}: TTFT p50 {med(ttft) * 1e3:7.0f} ms  max {max(ttft) * 1e3:7.0f} ms  "
          f"prompt {med(prompt):5.0f} tok  decode {med(decode):5.1f} tok/s  ({len(rows)} requests)")
    return med(ttft), med(decode)


print(f"{len(QUESTIONS)} questions x {runs}, max_tokens {MAX_TOKENS}, greedy, one request at a time")
rag_ttft, rag_dec = summarise("RAG profile", rag_rows)
plain_ttft, plain_dec = summarise("plain model", plain_rows)
rag = [r[3] for r in rag_rows if r[3]]
emb = med([r["timings"]["embed_ms"] for r in rag])
sea = med([r["timings"]["search_ms"] for r in rag])
pro = med([r["timings"]["prompt_ms"] for r in rag])
used = med([r["used"] for r in rag])
print(f"RAG split (p50): embed {emb:.1f} ms, search {sea:.2f} ms, prompt build {pro:.1f} ms, "
      f"prefill+first token {rag_ttft * 1e3 - emb - sea - pro:.0f} ms, decode {rag_dec:.1f} tok/s; "
      f"{used:.0f} chunks used")
print(f"ratio RAG / plain: TTFT {rag_ttft / plain_ttft:.2f}x, decode {rag_dec / plain_dec:.2f}x")
