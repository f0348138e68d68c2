"""Ingest throughput, its embedding ceiling and gateway RSS under an overload
mix, in one run of the gateway binary (argv[1]) on a fresh data dir:
1. ingest docs/*.md + README.md, repeated to --kb KB, as ~16 KB documents,
   --docs-per-request a request: KB/s, chunks/s, mean chunk size;
2. peer: as many mean-chunk-sized slices through /v1/embeddings, 64 a batch:
   chunks/s, and ingest chunks/s / embedding chunks/s;
3. overload: 10 chat requests of ~6.9 MB (an unknown member of 3,450,000
   zeros) and 3 of a 7,000,000-character message at once: VmRSS every 10 ms,
   the slowest /health (probed every 50 ms), the statuses.

    python3 bench/ingest.py BINARY [--kb 256] [--docs-per-request 4]
        [--skip-overload] [--gateway-arg=--max-inflight-body-bytes=...]
        [--out FILE.json] [-v]
    python3 bench/ingest.py --self-test

Standard library only. Any HTTP status of the overload mix is a result; a
failed connection, or an HTTP call of the ingest or peer that fails, ends the
run non-zero with a one-line message.
"""
import argparse
import glob
import http.client
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from rag_quality import BenchError, Client, Gateway as _Gateway  # noqa: E402

COLLECTION = "ingest"
DOC_CHARS = 16 * 1024
EMBED_BATCH = 64
JUNK_ZEROS = 3_450_000
LONG_CHARS = 7_000_000
REQUEST_TIMEOUT_S = 600


# --- pure helpers ---------------------------------------------------------------

def load_corpus(kb, root=ROOT):
    """docs/*.md and README.md, joined, repeated until at least `kb` KB (UTF-8)."""
    paths = sorted(glob.glob(os.path.join(root, "docs", "*.md"))) + [os.path.join(root, "README.md")]
    parts = []
    for p in paths:
        with open(p, encoding="utf-8") as f:
            parts.append(f.read().strip())
    one = "\n\n".join(x for x in parts if x)
    if not one:
        raise BenchError("no text in docs/*.md and README.md")
    return "\n\n".join([one] * -(-kb * 1024 // len(one.encode())))


def split_documents(text, size=DOC_CHARS):
    """Pieces of about `size` characters, cut at the last paragraph break
    ("\\n\\n") in the second half of the window, else at a space, else hard."""
    docs = []
    rest = text
    while rest.strip():
        if len(rest) <= size:
            cut = len(rest)
        else:
            cut = rest.rfind("\n\n", size // 2, size)
            if cut < 0:
                cut = rest.rfind(" ", size // 2, size)
            if cut < 0:
                cut = size
        piece, rest = rest[:cut], rest[cut:].lstrip()
        if piece.strip():
            docs.append(piece.strip())
    return docs


def embed_texts(text, n, length):
    """`n` slices of `text` of `length` characters, end to end, wrapping."""
    length = max(1, min(length, len(text)))
    span = max(1, len(text) - length + 1)
    out = []
    for i in range(n):
        s = text[(i * length) % span:][:length]
        out.append(s if s.strip() else "x")
    return out


def junk_body(model, zeros=JUNK_ZEROS):
    head = json.dumps({"model": model, "max_tokens": 1,
                       "messages": [{"role": "user", "content": "hi"}]})
    return (head[:-1] + ', "junk": [' + "0," * (zeros - 1) + "0]}").encode()


def long_body(model, chars=LONG_CHARS):
    return json.dumps({"model": model, "max_tokens": 1,
                       "messages": [{"role": "user", "content": "a" * chars}]}).encode()


def proc_field(path, key):
    """The value after `key:` on the first line of `path` that starts with
    `key`, or None (no such line, or the file is gone)."""
    try:
        with open(path) as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith(key)), None)
    except OSError:
        return None


def rss_kb(pid):
    """VmRSS of `pid` in KiB, or None once the process is gone."""
    v = proc_field(f"/proc/{pid}/status", "VmRSS")
    return int(v.split()[0]) if v else None


def self_test():
    text = load_corpus(64)
    docs = split_documents(text)
    assert len(text.encode()) >= 64 * 1024 and docs and all(d.strip() for d in docs)
    assert all(len(d) <= DOC_CHARS for d in docs), "a document over the size"
    assert sum(len(d) for d in docs) >= 0.95 * len(text), "text lost in the split"
    para = ("word " * 100 + "\n\n") * 100
    assert all(p.endswith("word") for p in split_documents(para, 1000)), "not at a paragraph"
    assert split_documents("x" * 2500, size=1000) == ["x" * 1000] * 2 + ["x" * 500]
    assert split_documents(" \n\n ") == []
    assert [len(s) for s in embed_texts(text, 50, 500)] == [500] * 50
    assert embed_texts("abc", 3, 10) == ["abc"] * 3
    jb, j = junk_body("m"), json.loads(junk_body("m"))
    assert len(j["junk"]) == JUNK_ZEROS and set(j["junk"]) == {0}
    assert j["model"] == "m" and j["max_tokens"] == 1 and j["messages"][0]["content"] == "hi"
    assert 6_800_000 <= len(jb) <= 7_000_000, len(jb)
    assert len(json.loads(long_body("m"))["messages"][0]["content"]) == LONG_CHARS
    print(f"self-test ok: corpus {len(text)} chars in {len(docs)} documents, "
          f"junk body {len(jb)} bytes")


# --- gateway ----------------------------------------------------------------------

class Gateway(_Gateway):
    """rag_quality's start-up and stop, with this benchmark's command line."""

    def __init__(self, binary, tmpdir, extra_args):
        self.log_path = os.path.join(tmpdir, "gateway.log")
        self.stdout_path = os.path.join(tmpdir, "gateway.stdout")
        self.data_dir = os.path.join(tmpdir, "data")
        os.makedirs(self.data_dir)
        self._log = open(self.log_path, "w")
        try:
            self.proc = subprocess.Popen(
                [binary, "--port", "0", "--data-dir", self.data_dir] + list(extra_args),
                stdout=subprocess.PIPE, stderr=self._log, text=True)
        except OSError as e:
            raise BenchError(f"cannot start the gateway {binary}: {e}")
        self._lines = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()


def raw_post(host, port, path, body):
    """POST prepared bytes; the status, or 'error:<Name>' when the connection
    fails. A send cut off by an early answer still reads that answer."""
    conn = http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT_S)
    try:
        try:
            conn.request("POST", path, body, {"content-type": "application/json"})
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway may answer (413/429) before reading it all
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException) as e:
        return f"error:{type(e).__name__}"
    finally:
        conn.close()


def mb(kib):
    return None if kib is None else round(kib / 1024, 1)


# --- the run ----------------------------------------------------------------------

def run_ingest(client, docs, per_request, verbose):
    client.call("POST", "/v1/collections", {"name": COLLECTION}, ok=(200, 201))
    chunks = 0
    t0 = time.perf_counter()
    for i in range(0, len(docs), per_request):
        batch = [{"id": f"doc-{i + k}", "text": d} for k, d in enumerate(docs[i:i + per_request])]
        resp = client.call("POST", f"/v1/collections/{COLLECTION}/documents",
                           {"documents": batch}, ok=(200, 201))
        chunks += int(resp.get("chunks", 0))
        if verbose:
            print(f"  docs {i}..{i + len(batch) - 1}: {resp.get('chunks')} chunks "
                  f"({time.perf_counter() - t0:.1f} s)")
    return chunks, time.perf_counter() - t0


def run_embed(client, texts, verbose):
    t0 = time.perf_counter()
    for i in range(0, len(texts), EMBED_BATCH):
        resp = client.call("POST", "/v1/embeddings", {"input": texts[i:i + EMBED_BATCH]})
        if len(resp.get("data", [])) != len(texts[i:i + EMBED_BATCH]):
            raise BenchError("/v1/embeddings returned the wrong number of vectors")
        if verbose:
            print(f"  embedded {i + EMBED_BATCH} ({time.perf_counter() - t0:.1f} s)")
    return time.perf_counter() - t0


def run_overload(gw, host, port, model):
    pid = gw.proc.pid
    base = rss_kb(pid)
    junk, long_ = junk_body(model), long_body(model)
    bodies = [junk] * 10 + [long_] * 3
    statuses, peak, health = [], [base or 0], []
    done = threading.Event()

    def sampler():
        while not done.is_set():
            r = rss_kb(pid)
            if r is not None:
                peak[0] = max(peak[0], r)
            time.sleep(0.01)

    def prober():
        while not done.is_set():
            t = time.perf_counter()
            conn = http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT_S)
            try:
                conn.request("GET", "/health")
                conn.getresponse().read()
                health.append(time.perf_counter() - t)
            except (OSError, http.client.HTTPException):
                health.append(None)
            finally:
                conn.close()
            time.sleep(0.05)

    def sender(body):
        statuses.append(raw_post(host, port, "/v1/chat/completions", body))

    helpers = [threading.Thread(target=f) for f in (sampler, prober)]
    senders = [threading.Thread(target=sender, args=(b,)) for b in bodies]
    t0 = time.perf_counter()
    for t in helpers + senders:
        t.start()
    for t in senders:
        t.join()
    mix_s = time.perf_counter() - t0
    done.set()
    for t in helpers:
        t.join()
    time.sleep(5)
    after = rss_kb(pid)
    ok_probes = [h for h in health if h is not None]
    return {
        "baseline_mb": mb(base), "peak_mb": mb(peak[0]),
        "peak_minus_baseline_mb": mb(peak[0] - (base or 0)),
        "after_5s_mb": mb(after), "mix_s": round(mix_s, 2),
        "statuses": {str(k): v for k, v in sorted(Counter(statuses).items(), key=lambda kv: str(kv[0]))},
        "health_probes": len(health), "health_failed": len(health) - len(ok_probes),
        "health_max_ms": round(1000 * max(ok_probes), 1) if ok_probes else None,
        "gateway_exit": gw.proc.poll(),
    }


def run(args):
    cpu, cores = proc_field("/proc/cpuinfo", "model name") or "unknown", os.cpu_count()
    print(f"cpu: {cpu}, {cores} cores")
    text = load_corpus(args.kb)
    docs = split_documents(text)
    nbytes = len(text.encode())
    tmpdir = tempfile.mkdtemp(prefix="ragmesh-ingest-")
    gw = None
    ok = False
    out = {"cpu": cpu, "cores": cores, "gateway_args": args.gateway_arg}
    try:
        t0 = time.time()
        gw = Gateway(args.binary, tmpdir, args.gateway_arg)
        host, port = gw.wait_ready()
        client = Client(host, port)
        print(f"gateway up in {time.time() - t0:.1f} s at {host}:{port}")

        chunks, ingest_s = run_ingest(client, docs, args.docs_per_request, args.verbose)
        if chunks <= 0:
            raise BenchError("ingest made no chunks")
        mean_chunk = len(text) / chunks
        ing_cps = chunks / ingest_s
        print(f"ingest: {nbytes / 1024:.0f} KB in {len(docs)} documents "
              f"({args.docs_per_request}/request), {chunks} chunks in {ingest_s:.2f} s: "
              f"{nbytes / 1024 / ingest_s:.1f} KB/s, {ing_cps:.1f} chunks/s, "
              f"mean chunk {mean_chunk:.0f} chars")

        texts = embed_texts(text, chunks, round(mean_chunk))
        embed_s = run_embed(client, texts, args.verbose)
        emb_cps = chunks / embed_s
        print(f"embedding peer: {chunks} texts of {round(mean_chunk)} chars in batches of "
              f"{EMBED_BATCH}, {embed_s:.2f} s: {emb_cps:.1f} chunks/s; "
              f"ingest / embedding = {ing_cps / emb_cps:.2f}")
        out.update({
            "corpus_kb": round(nbytes / 1024, 1), "documents": len(docs),
            "docs_per_request": args.docs_per_request, "chunks": chunks,
            "ingest_s": round(ingest_s, 3), "ingest_kb_s": round(nbytes / 1024 / ingest_s, 1),
            "ingest_chunks_s": round(ing_cps, 1), "mean_chunk_chars": round(mean_chunk, 1),
            "embed_s": round(embed_s, 3), "embed_chunks_s": round(emb_cps, 1),
            "ingest_over_embed": round(ing_cps / emb_cps, 3),
        })

        if not args.skip_overload:
            models = client.call("GET", "/v1/models").get("data", [])
            chat = [m["id"] for m in models if m.get("type") == "chat"]
            if not chat:
                raise BenchError(f"no chat model in /v1/models: {[m.get('id') for m in models]}")
            o = run_overload(gw, host, port, chat[0])
            o["model"] = chat[0]
            out["overload"] = o
            print(f"overload ({chat[0]}; 10 x {len(junk_body(chat[0])) / 1e6:.1f} MB junk, "
                  f"3 x {LONG_CHARS / 1e6:.0f} M-char message) in {o['mix_s']:.1f} s: "
                  f"rss baseline {o['baseline_mb']} MB, peak {o['peak_mb']} MB "
                  f"(+{o['peak_minus_baseline_mb']} MB), 5 s after {o['after_5s_mb']} MB")
            print(f"  statuses {o['statuses']}; /health slowest {o['health_max_ms']} ms "
                  f"over {o['health_probes']} probes ({o['health_failed']} failed)")
        ok = gw.proc.poll() is None  # keep the log of a gateway that died
    finally:
        if gw is not None:
            gw.stop()
        if ok:
            shutil.rmtree(tmpdir, ignore_errors=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)
        print(f"wrote {args.out}")
    o = out.get("overload") or {"statuses": {}, "health_failed": 0, "gateway_exit": None}
    if o["gateway_exit"] is not None:
        raise BenchError(f"the gateway exited ({o['gateway_exit']}) during the overload mix "
                         f"(log kept in {tmpdir})")
    errs = [k for k in o["statuses"] if k.startswith("error:")]
    if errs or o["health_failed"]:
        raise BenchError(f"connection failures in the overload mix: chat {errs}, "
                         f"{o['health_failed']} /health probes")


def main():
    p = argparse.ArgumentParser(description="ingest throughput and overload RSS of the ragmesh gateway")
    p.add_argument("binary", nargs="?", help="the ragmesh-gateway binary")
    p.add_argument("--kb", type=int, default=256, help="corpus size in KB (at least)")
    p.add_argument("--docs-per-request", type=int, default=4)
    p.add_argument("--skip-overload", action="store_true", help="only ingest and the embedding peer")
    p.add_argument("--gateway-arg", action="append", default=[],
                   help="appended to the gateway command line (repeatable; "
                   "--gateway-arg=--max-inflight-body-bytes=N)")
    p.add_argument("--out", help="write every figure to this JSON file")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--self-test", action="store_true", help="check the helpers; no gateway")
    args = p.parse_args()
    if args.self_test:
        return self_test() or 0
    if not args.binary or args.kb <= 0 or args.docs_per_request <= 0:
        p.error("the gateway binary is required; --kb and --docs-per-request must be positive")
    try:
        run(args)
    except BenchError as e:
        print(f"ingest: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ingest: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
