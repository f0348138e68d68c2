"""Loads a folder of documents into a ragmesh collection through the gateway's
HTTP API (the ingest Job of the Helm chart; standard library only).

    POST /v1/collections                      {"name": C}      (409: exists, fine)
    POST /v1/collections/C/documents          {"documents": [{"id", "text", "metadata"}]}

Each file's id is its path under SOURCE_DIR, so re-running replaces documents
instead of duplicating them. Environment: GATEWAY_URL, COLLECTION, SOURCE_DIR,
EXTENSIONS (comma-separated), BATCH_DOCUMENTS, TIMEOUT_S, RAGMESH_API_KEY (optional).
"""
import json
import os
import sys
import time
import urllib.error
import urllib.request

URL = os.environ["GATEWAY_URL"].rstrip("/")
COLLECTION = os.environ["COLLECTION"]
SOURCE = os.environ.get("SOURCE_DIR", "/documents")
EXTS = tuple(e.strip() for e in os.environ.get("EXTENSIONS", ".md,.txt").split(",") if e.strip())
BATCH = int(os.environ.get("BATCH_DOCUMENTS", "64"))
DEADLINE = time.monotonic() + int(os.environ.get("TIMEOUT_S", "900"))
KEY = os.environ.get("RAGMESH_API_KEY", "")
# well under the gateway's default --max-body-bytes (8 MiB)
MAX_BATCH_BYTES = 4 * 1024 * 1024


def call(method, path, body=None):
    """(status, parsed body); retries connection errors, 429 and 503 until the deadline."""
    data = None if body is None else json.dumps(body).encode()
    while True:
        req = urllib.request.Request(URL + path, data=data, method=method)
        req.add_header("content-type", "application/json")
        if KEY:
            req.add_header("authorization", "Bearer " + KEY)
        wait = 2.0
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            if e.code not in (429, 503):
                try:
                    return e.code, json.loads(text)
                except ValueError:
                    return e.code, text
            wait = float(e.headers.get("retry-after") or 2)
            why = f"HTTP {e.code}"
        except (urllib.error.URLError, OSError) as e:
            why = str(e)
        if time.monotonic() + wait > DEADLINE:
            sys.exit(f"ingest: {method} {path}: gave up: {why}")
        print(f"ingest: {method} {path}: {why}; retrying in {wait:.0f}s", flush=True)
        time.sleep(wait)


def documents():
    for root, dirs, files in os.walk(SOURCE):
        # a mounted ConfigMap keeps its real files under ..data; skip the dot entries
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if f.startswith(".") or not f.endswith(EXTS):
                continue
            path = os.path.join(root, f)
            rel = os.path.relpath(path, SOURCE)
            with open(path, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
            if text.strip():
                yield {"id": rel, "text": text, "metadata": {"source": rel}}


def batches(docs):
    batch, size = [], 0
    for d in docs:
        n = len(json.dumps(d))
        if batch and (len(batch) >= BATCH or size + n > MAX_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(d)
        size += n
    if batch:
        yield batch


def main():
    status, body = call("POST", "/v1/collections", {"name": COLLECTION})
    if status not in (200, 409):
        sys.exit(f"ingest: creating collection {COLLECTION}: HTTP {status}: {body}")
    total_docs = total_chunks = 0
    for batch in batches(documents()):
        status, body = call("POST", f"/v1/collections/{COLLECTION}/documents", {"documents": batch})
        if status != 200:
            ids = ", ".join(d["id"] for d in batch[:5])
            sys.exit(f"ingest: documents [{ids}...]: HTTP {status}: {body}")
        total_docs += body.get("documents", len(batch))
        total_chunks += body.get("chunks", 0)
        print(f"ingest: {total_docs} documents, {total_chunks} chunks so far", flush=True)
    if total_docs == 0:
        sys.exit(f"ingest: no {'/'.join(EXTS)} files under {SOURCE}")
    print(f"ingest: done: {total_docs} documents, {total_chunks} chunks into {COLLECTION}")


if __name__ == "__main__":
    main()
