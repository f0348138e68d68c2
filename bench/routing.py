"""Routing over two runner replicas: least-outstanding vs prefix (cache-aware).

For each routing mode, in one invocation: two fresh llm-runner processes
(one compute thread each) and a gateway over them
(`--runner-routing MODE`). Then 32 chat sessions of 4 turns run at once,
each turn resending its history (a ~150-token system prompt of its own per
session, short questions, 12-token answers), and the same again with one
hot opening shared by every session. Reported per mode and workload: time
to first token p50/p99 over all turns, and the prefix-cache hit rate
(hits / queries, in tokens, summed over both runners' counters).

Usage: routing.py TARGET_DIR [sessions] [turns]
"""
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time

target = sys.argv[1]
SESSIONS = int(sys.argv[2]) if len(sys.argv) > 2 else 32
TURNS = int(sys.argv[3]) if len(sys.argv) > 3 else 4
MODEL = "SmolLM2-135M-Instruct.Q4_1"


def start(args):
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in p.stdout:
        if " listening " in line:
            addrs = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
            return p, addrs
    raise SystemExit(f"{args[0]} did not start")


def counters(http_addr):
    host, port = http_addr.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    out = {}
    for line in text.splitlines():
        for name in ("ragmesh_llm_prefix_cache_queries_total", "ragmesh_llm_prefix_cache_hits_total"):
            if line.startswith(name + " "):
                out[name] = float(line.split()[-1])
    return out


def system_prompt(tag):
    return " ".join(f"Rule {i} for desk {tag}: answer in a few words and never invent a pier number."
                    for i in range(1, 9))


def turn(addr, messages):
    """One streamed chat turn: (ttft seconds, answer text)."""
    host, port = addr.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=300)
    body = json.dumps({"model": MODEL, "stream": True, "max_tokens": 12, "temperature": 0,
                       "messages": messages})
    t0 = time.perf_counter()
    c.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
    r = c.getresponse()
    assert r.status == 200, (r.status, r.read())
    ttft, text = None, ""
    for raw in r:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        for ch in chunk.get("choices", []):
            piece = ch.get("delta", {}).get("content") or ""
            if piece and ttft is None:
                ttft = time.perf_counter() - t0
            text += piece
    return ttft if ttft is not None else time.perf_counter() - t0, text


def sessions(addr, hot):
    ttfts, lock = [], threading.Lock()

    def one(i):
        tag = "hot" if hot else f"S{i}"
        opening = "Which pier is free today?" if hot else f"Session {i}: which pier is free today?"
        msgs = [{"role": "system", "content": system_prompt(tag)}, {"role": "user", "content": opening}]
        for t in range(TURNS):
            if t:
                msgs.append({"role": "user", "content": f"And for ship {i}-{t}?"})
            ttft, answer = turn(addr, msgs)
            msgs.append({"role": "assistant", "content": answer})
            with lock:
                ttfts.append(ttft)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(SESSIONS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return ttfts


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


results = {}
for mode in ["least-outstanding", "prefix"]:
    runners = [start([f"{target}/debug/ragmesh-llm-runner", "--grpc-port", "0", "--http-port", "0",
                      "--threads", "1"]) for _ in range(2)]
    eps = ",".join("http://" + a["grpc"] for _, a in runners)
    data = tempfile.mkdtemp(prefix="ragmesh-bench-")
    gw, gaddr = start([f"{target}/debug/ragmesh-gateway", "--port", "0", "--data-dir", data,
                       "--llm-model", "none", "--runner-endpoints", eps, "--runner-routing", mode,
                       "--mesh-probe-interval-ms", "200"])
    turn(gaddr["http"], [{"role": "user", "content": "Hello."}])  # warm-up
    for workload, hot in [("distinct", False), ("hot", True)]:
        before = [counters(a["http"]) for _, a in runners]
        t0 = time.perf_counter()
        ttfts = sessions(gaddr["http"], hot)
        wall = time.perf_counter() - t0
        after = [counters(a["http"]) for _, a in runners]
        q = sum(a.get("ragmesh_llm_prefix_cache_queries_total", 0) - b.get("ragmesh_llm_prefix_cache_queries_total", 0)
                for a, b in zip(after, before))
        h = sum(a.get("ragmesh_llm_prefix_cache_hits_total", 0) - b.get("ragmesh_llm_prefix_cache_hits_total", 0)
                for a, b in zip(after, before))
        results[(mode, workload)] = {
            "ttft_p50_ms": round(statistics.median(ttfts) * 1e3, 1),
            "ttft_p99_ms": round(pct(ttfts, 0.99) * 1e3, 1),
            "hit_rate": round(h / max(q, 1), 3),
            "wall_s": round(wall, 1),
        }
    for p, _ in runners + [(gw, None)]:
        p.kill()
        p.wait()

print(json.dumps({f"{m}/{w}": v for (m, w), v in results.items()}))
print(f"{SESSIONS} sessions x {TURNS} turns over 2 runner replicas")
print("workload  routing            ttft p50 (ms)  ttft p99 (ms)  hit rate  wall (s)")
for (m, w), v in results.items():
    print(f"{w:<9} {m:<18} {v['ttft_p50_ms']:>13}  {v['ttft_p99_ms']:>13}  {v['hit_rate']:>8}  {v['wall_s']:>8}")
for w in ["distinct", "hot"]:
    lo, pr = results[("least-outstanding", w)], results[("prefix", w)]
    print(f"{w}: prefix / least-outstanding p99 TTFT = {pr['ttft_p99_ms'] / lo['ttft_p99_ms']:.2f}, "
          f"hit rate {lo['hit_rate']} -> {pr['hit_rate']}")
