"""RAG answer quality: does the gateway retrieve the right document and does
the model put the fact in its answer?

The corpus (bench/rag_quality/corpus.json) is made of invented facts that no
model can know, so a correct answer has to come from the retrieved text.
Starts the gateway binary (argv[1]) on a fresh data dir, ingests the corpus
into a collection served by a RAG profile (its sampling defaults and the
built-in template, or --template), asks every question of
bench/rag_quality/questions.json greedily through it, and prints per-question rows and a summary:
retrieval hit@1 / hit@3, fact in answer, cited a source, degenerate
(a repeated 6-word run), finish_reason "length", tokens and latency.

    python3 bench/rag_quality.py BINARY [--max-tokens 96] [--out FILE.json]
        [--model NAME | --plain] [--template FILE.j2] [--top-k 3]
        [--extra '{"repetition_penalty": 1.0}'] [--no-rag] [-v]
    python3 bench/rag_quality.py --self-test

Standard library only. Exits 0 after a completed run whatever the scores;
non-zero with a one-line message when the gateway or an HTTP call fails.
"""
import argparse
import http.client
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "rag_quality")
COLLECTION = "quality"
PROFILE = "quality-assistant"
START_TIMEOUT_S = 300
REQUEST_TIMEOUT_S = 600


class BenchError(Exception):
    """A failure that ends the run with a one-line message."""


# --- answer checks (reusable) -------------------------------------------------

def words(text):
    """Lowercased words with the punctuation stripped (empty ones dropped)."""
    out = []
    for w in text.lower().split():
        w = re.sub(r"[^\w]", "", w)
        if w:
            out.append(w)
    return out


def repeated_ngram(text, n=6):
    """The first run of `n` consecutive words that occurs twice or more in
    `text` (lowercased, punctuation stripped), or None."""
    ws = words(text)
    grams = Counter(tuple(ws[i:i + n]) for i in range(len(ws) - n + 1))
    for i in range(len(ws) - n + 1):
        g = tuple(ws[i:i + n])
        if grams[g] >= 2:
            return " ".join(g)
    return None


def degenerate(text, n=6):
    """True when some run of `n` consecutive words (lowercased, punctuation
    stripped) occurs twice or more in `text`: the answer loops."""
    return repeated_ngram(text, n) is not None


def contains_fact(text, accepted):
    """The first accepted string found in `text`, case-insensitively, or None.
    A string that begins (ends) with a digit must not be preceded (followed)
    by another digit, so "40" does not match inside "240"."""
    low = text.lower()
    for a in accepted:
        pat = re.escape(a.lower())
        if a[:1].isdigit():
            pat = r"(?<![\d])" + pat
        if a[-1:].isdigit():
            pat = pat + r"(?![\d])"
        if re.search(pat, low):
            return a
    return None


def cited_indices(text, citations):
    """The bracketed numbers ("[1]", "[2]"...) in `text` that are the index
    of one of `citations`, in order of first appearance."""
    valid = {c.get("index") for c in citations}
    seen = []
    for m in re.finditer(r"\[(\d+)\]", text):
        i = int(m.group(1))
        if i in valid and i not in seen:
            seen.append(i)
    return seen


# --- data ---------------------------------------------------------------------

def load_data():
    with open(os.path.join(DATA, "corpus.json")) as f:
        corpus = json.load(f)
    with open(os.path.join(DATA, "questions.json")) as f:
        questions = json.load(f)
    return corpus, questions


def check_data(corpus, questions):
    """Every question points at a document that holds each accepted answer
    (case-insensitive; thousands separators ignored, so "4380" is accepted
    for a document that says "4,380"). Returns a list of problems."""
    problems = []
    ids = [d["id"] for d in corpus]
    if len(set(ids)) != len(ids):
        problems.append("duplicate document ids")
    texts = {d["id"]: d["text"] for d in corpus}
    for d in corpus:
        if not d["id"].endswith(".md") or not d["text"].strip():
            problems.append(f"bad document {d['id']!r}")
        if len(d["text"].split()) > 120:
            problems.append(f"{d['id']}: over 120 words")

    def norm(s):
        return s.lower().replace(",", "")

    for q in questions:
        if q["doc"] not in texts:
            problems.append(f"{q['q']!r}: no document {q['doc']!r}")
            continue
        if not q["answer"]:
            problems.append(f"{q['q']!r}: no accepted answer")
        for a in q["answer"]:
            if norm(a) not in norm(texts[q["doc"]]):
                problems.append(f"{q['q']!r}: {a!r} is not in {q['doc']}")
    return problems


def self_test():
    looping = ("The Kelvar Reactor runs at 742 kelvin. The Kelvar Reactor runs at "
               "742 kelvin. The Kelvar Reactor runs at 742 kelvin.")
    clean = ("The Kelvar Reactor runs at 742 kelvin [1]. It is cooled by a blue "
             "fluoride salt and was switched on by Ilsa Varnok in March 2031.")
    assert degenerate(looping), "looping text not flagged"
    assert repeated_ngram(looping) == "the kelvar reactor runs at 742"
    assert not degenerate(clean), "clean text flagged"
    assert degenerate("Yes, it is. YES it is! yes -- it is; yes it is", n=3)
    assert not degenerate("one two three four five", n=6)
    assert contains_fact("It runs at 742 K.", ["742"]) == "742"
    assert contains_fact("about 1240 people", ["1,240", "1240"]) == "1240"
    assert contains_fact("it carries 240 people", ["40"]) is None
    assert contains_fact("ILSA VARNOK did", ["Ilsa Varnok"]) == "Ilsa Varnok"
    cits = [{"index": 1}, {"index": 2}]
    assert cited_indices("see [2] and [1] and [2] and [7]", cits) == [2, 1]
    assert cited_indices("no sources", cits) == []
    corpus, questions = load_data()
    problems = check_data(corpus, questions)
    assert not problems, "\n".join(problems)
    print(f"self-test ok: {len(corpus)} documents, {len(questions)} questions")


# --- gateway ------------------------------------------------------------------

class Gateway:
    def __init__(self, binary, tmpdir, args):
        self.log_path = os.path.join(tmpdir, "gateway.log")
        self.stdout_path = os.path.join(tmpdir, "gateway.stdout")
        self.data_dir = os.path.join(tmpdir, "data")
        os.makedirs(self.data_dir)
        # the profile the benchmark asks by default: the collection, top_k
        # and (optionally) a template; sampling is the profile's defaults
        config = os.path.join(tmpdir, "gateway.toml")
        with open(config, "w") as f:
            f.write(f'[[profile]]\nname = "{PROFILE}"\ncollection = "{COLLECTION}"\n'
                    f"top_k = {args.top_k}\n")
            if args.template:
                f.write(f"template = {json.dumps(os.path.abspath(args.template))}\n")
        self._log = open(self.log_path, "w")
        try:
            self.proc = subprocess.Popen(
                [binary, "--port", "0", "--data-dir", self.data_dir, "--config", config],
                stdout=subprocess.PIPE, stderr=self._log, text=True,
            )
        except OSError as e:
            raise BenchError(f"cannot start the gateway {binary}: {e}")
        self._lines = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        # keeps draining stdout after start-up so the pipe never fills
        with open(self.stdout_path, "w") as out:
            for line in self.proc.stdout:
                out.write(line)
                out.flush()
                self._lines.put(line)
        self._lines.put(None)

    def wait_ready(self, timeout=START_TIMEOUT_S):
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                raise BenchError(f"gateway did not report listening within {timeout} s "
                                 f"(log: {self.log_path})")
            try:
                line = self._lines.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if line is None:
                code = self.proc.wait()
                raise BenchError(f"gateway exited with status {code} before listening "
                                 f"(log: {self.log_path})")
            if " listening " in line and "http=" in line:
                addr = line.split("http=", 1)[1].split()[0].strip()
                host, port = addr.rsplit(":", 1)
                return host, int(port)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class Client:
    def __init__(self, host, port):
        self.host, self.port = host, port

    def call(self, method, path, body=None, ok=(200,)):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=REQUEST_TIMEOUT_S)
        try:
            data = None if body is None else json.dumps(body)
            headers = {"content-type": "application/json"} if body is not None else {}
            conn.request(method, path, data, headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise BenchError(f"{method} {path} failed: {e}")
        finally:
            conn.close()
        if resp.status not in ok:
            text = raw.decode(errors="replace").replace("\n", " ")[:300]
            raise BenchError(f"{method} {path} returned {resp.status}: {text}")
        try:
            return json.loads(raw)
        except ValueError:
            raise BenchError(f"{method} {path} returned non-JSON: {raw[:200]!r}")


def pick_chat_model(client):
    models = client.call("GET", "/v1/models").get("data", [])
    ids = [m.get("id", "") for m in models]
    for m in models:
        if m.get("id", "").startswith("SmolLM2"):
            return m["id"]
    for m in models:
        if m.get("type") == "chat":
            return m["id"]
    raise BenchError(f"no SmolLM2 chat model in /v1/models: {ids}")


# --- the run ------------------------------------------------------------------

def pct(k, n):
    return f"{k}/{n} ({100 * k / n:.0f}%)" if n else f"{k}/0"


def ask(client, model, q, args, extra):
    body = {
        "model": model,
        "messages": [{"role": "user", "content": q["q"]}],
        "max_tokens": args.max_tokens,
        "temperature": 0,
    }
    if not args.no_rag and model != PROFILE:
        body["rag"] = {"collection": COLLECTION, "top_k": args.top_k}
    body.update(extra)
    start = time.perf_counter()
    resp = client.call("POST", "/v1/chat/completions", body)
    latency = time.perf_counter() - start
    try:
        choice = resp["choices"][0]
        msg = choice["message"]
    except (KeyError, IndexError, TypeError):
        raise BenchError(f"chat completion without choices: {json.dumps(resp)[:300]}")
    answer = msg.get("content") or ""
    citations = msg.get("citations") or []
    docs = [c.get("doc_id") for c in citations]
    fact = contains_fact(answer, q["answer"])
    loop = repeated_ngram(answer)
    return {
        "q": q["q"],
        "doc": q["doc"],
        "accepted": q["answer"],
        "answer": answer,
        "retrieved": docs,
        "scores": [c.get("score") for c in citations],
        "hit1": bool(docs) and docs[0] == q["doc"],
        "hit3": q["doc"] in docs,  # among the citations (top_k of them)
        "fact": fact is not None,
        "fact_matched": fact,
        "cited": cited_indices(answer, citations),
        "degenerate": loop is not None,
        "repeated": loop,
        "finish_reason": choice.get("finish_reason"),
        "completion_tokens": (resp.get("usage") or {}).get("completion_tokens"),
        "latency_s": round(latency, 3),
    }


def summarise(rows):
    n = len(rows)
    toks = [r["completion_tokens"] for r in rows if r["completion_tokens"] is not None]
    lat = [r["latency_s"] for r in rows]
    return {
        "questions": n,
        "hit1": sum(r["hit1"] for r in rows),
        "hit3": sum(r["hit3"] for r in rows),
        "fact": sum(r["fact"] for r in rows),
        "fact_and_hit3": sum(r["fact"] and r["hit3"] for r in rows),
        "cited": sum(bool(r["cited"]) for r in rows),
        "degenerate": sum(r["degenerate"] for r in rows),
        "finish_length": sum(r["finish_reason"] == "length" for r in rows),
        "mean_completion_tokens": round(sum(toks) / len(toks), 1) if toks else None,
        "mean_latency_s": round(sum(lat) / n, 3) if n else None,
        "max_latency_s": max(lat) if lat else None,
    }


def print_row(i, r, verbose):
    def f(b):
        return "y" if b else "."
    fin = "len" if r["finish_reason"] == "length" else (r["finish_reason"] or "?")[:4]
    top = (r["retrieved"][0] if r["retrieved"] else "-")[:22]
    print(f"{i:>3} {f(r['hit1']):>4} {f(r['hit3']):>4} {f(r['fact']):>4} "
          f"{f(r['cited']):>4} {f(r['degenerate']):>5} {fin:>4} "
          f"{r['completion_tokens'] if r['completion_tokens'] is not None else '-':>4} "
          f"{r['latency_s']:6.2f}  {top:<22}  {r['q'][:48]}")
    if verbose:
        print("      -> " + r["answer"].replace("\n", " ")[:400])


def run(args):
    extra = {}
    if args.extra:
        try:
            extra = json.loads(args.extra)
        except ValueError as e:
            raise BenchError(f"--extra is not JSON: {e}")
        if not isinstance(extra, dict):
            raise BenchError("--extra must be a JSON object")
    corpus, questions = load_data()
    problems = check_data(corpus, questions)
    if problems:
        raise BenchError(f"bad benchmark data: {problems[0]}")

    tmpdir = tempfile.mkdtemp(prefix="ragmesh-quality-")
    gw = None
    ok = False
    try:
        t0 = time.time()
        gw = Gateway(args.binary, tmpdir, args)
        host, port = gw.wait_ready()
        client = Client(host, port)
        up_s = time.time() - t0
        model = args.model or (pick_chat_model(client) if args.plain or args.no_rag else PROFILE)
        client.call("POST", "/v1/collections", {"name": COLLECTION}, ok=(200, 201))
        t1 = time.time()
        client.call("POST", f"/v1/collections/{COLLECTION}/documents",
                    {"documents": corpus}, ok=(200, 201))
        ingest_s = time.time() - t1
        print(f"gateway up in {up_s:.1f} s at {host}:{port}; {len(corpus)} documents "
              f"ingested in {ingest_s:.1f} s")
        print(f"model {model}, max_tokens {args.max_tokens}, temperature 0, "
              + ("no retrieval" if args.no_rag else f"top_k {args.top_k}")
              + (f", extra {json.dumps(extra)}" if extra else ""))
        print(f"{'#':>3} {'hit1':>4} {'hit3':>4} {'fact':>4} {'cite':>4} {'degen':>5} "
              f"{'fin':>4} {'tok':>4} {'lat_s':>6}  {'top document':<22}  question")
        rows = []
        for i, q in enumerate(questions, 1):
            r = ask(client, model, q, args, extra)
            rows.append(r)
            print_row(i, r, args.verbose)
            sys.stdout.flush()
        ok = True
    finally:
        if gw is not None:
            gw.stop()
        if ok:
            shutil.rmtree(tmpdir, ignore_errors=True)

    s = summarise(rows)
    n = s["questions"]
    print()
    print(f"summary ({model}, {n} questions)")
    if not args.no_rag:
        print(f"  hit@1               {pct(s['hit1'], n)}")
        print(f"  hit@{args.top_k:<2}               {pct(s['hit3'], n)}")
    print(f"  fact in answer      {pct(s['fact'], n)}")
    if not args.no_rag:
        print(f"  fact, doc retrieved {pct(s['fact_and_hit3'], n)}")
        print(f"  cited               {pct(s['cited'], n)}")
    print(f"  degenerate          {pct(s['degenerate'], n)}")
    print(f"  finish=length       {pct(s['finish_length'], n)}")
    print(f"  completion tokens   {s['mean_completion_tokens']} mean")
    print(f"  latency             {s['mean_latency_s']:.2f} s mean, {s['max_latency_s']:.2f} s max")
    if args.out:
        report = {
            "config": {
                "binary": args.binary, "model": model, "max_tokens": args.max_tokens,
                "top_k": None if args.no_rag else args.top_k, "extra": extra,
                "documents": len(corpus), "startup_s": round(up_s, 2),
                "ingest_s": round(ingest_s, 2),
            },
            "summary": s,
            "questions": rows,
        }
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.out}")


def main():
    p = argparse.ArgumentParser(description="RAG answer-quality benchmark for the ragmesh gateway")
    p.add_argument("binary", nargs="?", help="the ragmesh-gateway binary")
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--out", help="write every figure and answer to this JSON file")
    p.add_argument("--model", help=f"model or RAG profile to ask (default: the profile '{PROFILE}' "
                   "over the corpus, with the profile's sampling defaults)")
    p.add_argument("--plain", action="store_true",
                   help="ask the plain chat model with a 'rag' object (OpenAI's sampling defaults)")
    p.add_argument("--template", help="prompt template file for the profile (default: the built-in)")
    p.add_argument("--extra", help="JSON object merged into every chat request body")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--no-rag", action="store_true",
                   help="ask without retrieval (control: the facts are invented)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every answer")
    p.add_argument("--self-test", action="store_true",
                   help="check the answer checks and the data; no gateway")
    args = p.parse_args()
    if args.self_test:
        self_test()
        return 0
    if not args.binary:
        p.error("the gateway binary is required")
    try:
        run(args)
    except BenchError as e:
        print(f"rag_quality: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rag_quality: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
