"""The official OpenAI Python SDK against the gateway's Files and Vector
Stores API, with real documents (tests/fixtures/documents: Markdown, HTML,
PDF, DOCX of invented facts).

Run by tests/tests/files_e2e.rs with: the gateway's base URL, the key of
tenant A, the key of tenant B, the fixtures folder, and the gateway's
--max-file-bytes. Every response body is also validated against OpenAI's
published schemas (openai_schemas.py). Exits non-zero on any mismatch.
"""
import os
import sys
import time

import openai

from openai_schemas import validate
from sdk_checks import check, raises

base, key_a, key_b, fixtures, max_file_bytes = sys.argv[1:6]
max_file_bytes = int(max_file_bytes)
a = openai.OpenAI(base_url=base + "/v1", api_key=key_a, max_retries=0)
b = openai.OpenAI(base_url=base + "/v1", api_key=key_b, max_retries=0)


def fixture(name):
    return os.path.join(fixtures, name)


# ---- files -----------------------------------------------------------------
uploaded = {}
for name in ["orchard.md", "lighthouse.html", "glacier.pdf", "reactor.docx"]:
    with open(fixture(name), "rb") as f:
        fo = check("OpenAIFile", a.files.create(file=f, purpose="assistants"))
    assert fo.filename == name and fo.purpose == "assistants" and fo.bytes == os.path.getsize(fixture(name)), fo
    assert fo.id.startswith("file-") and fo.status == "processed", fo
    uploaded[name] = fo.id

listed = check("ListFilesResponse", a.files.list())
assert {f.id for f in listed.data} >= set(uploaded.values()), listed
assert all(f.purpose == "assistants" for f in a.files.list(purpose="assistants").data)
assert a.files.list(purpose="user_data").data == []
page = a.files.list(limit=2, order="asc")
assert len(page.data) == 2 and page.has_more, page
# ids sort in creation order: asc pages give the upload order
assert [f.id for f in page.data] == [uploaded["orchard.md"], uploaded["lighthouse.html"]], page
assert check("OpenAIFile", a.files.retrieve(uploaded["orchard.md"])).filename == "orchard.md"
with open(fixture("orchard.md"), "rb") as f:
    assert a.files.content(uploaded["orchard.md"]).read() == f.read()

# bad uploads: typed SDK exceptions
with open(fixture("orchard.md"), "rb") as f:
    raises(openai.BadRequestError, a.files.create, file=f, purpose="fine-tune", says="purpose")
big = b"x" * (max_file_bytes + 1)
e = raises(openai.APIStatusError, a.files.create, file=("big.txt", big), purpose="assistants")
assert e.status_code == 413, e
raises(openai.NotFoundError, a.files.retrieve, "file-doesnotexist")

# ---- vector store + upload_and_poll ------------------------------------------
vs = check("VectorStoreObject", a.vector_stores.create(name="facts", metadata={"team": "docs"}))
assert vs.name == "facts" and vs.metadata == {"team": "docs"} and vs.file_counts.total == 0, vs
with open(fixture("orchard.md"), "rb") as f:
    vf = a.vector_stores.files.upload_and_poll(vector_store_id=vs.id, file=f, poll_interval_ms=200)
check("VectorStoreFileObject", vf)
assert vf.status == "completed" and vf.usage_bytes > 0 and vf.last_error is None, vf
assert vf.chunking_strategy.type == "static", vf
# upload_and_poll uploaded a second copy: that copy is the store's orchard.md
in_store = dict(uploaded, **{"orchard.md": vf.id})

# the other three files in one batch, with attributes per file
batch = a.vector_stores.file_batches.create_and_poll(
    vector_store_id=vs.id,
    files=[
        {"file_id": uploaded["lighthouse.html"], "attributes": {"kind": "html", "year": 1890}},
        {"file_id": uploaded["glacier.pdf"], "attributes": {"kind": "pdf", "year": 1962}},
        {"file_id": uploaded["reactor.docx"], "attributes": {"kind": "docx", "year": 2031}},
    ],
    poll_interval_ms=200,
)
check("VectorStoreFileBatchObject", batch)
assert batch.status == "completed" and batch.file_counts.completed == 3 and batch.file_counts.total == 3, batch
bfiles = check("ListVectorStoreFilesResponse", a.vector_stores.file_batches.list_files(vector_store_id=vs.id, batch_id=batch.id))
assert {f.id for f in bfiles.data} == {uploaded[n] for n in ["lighthouse.html", "glacier.pdf", "reactor.docx"]}, bfiles

vs = check("VectorStoreObject", a.vector_stores.retrieve(vs.id))
assert vs.file_counts.completed == 4 and vs.file_counts.total == 4 and vs.status == "completed", vs
assert vs.usage_bytes >= sum(f.usage_bytes for f in a.vector_stores.files.list(vector_store_id=vs.id).data) > 0, vs

# ---- search: each format's fact comes back from its own file ---------------
for query, name, phrase in [
    ("When was the Veltrian Crisp apple first grafted?", "orchard.md", "1874"),
    ("How often does the Tarnhollow lighthouse flash?", "lighthouse.html", "nine seconds"),
    ("What was found frozen in the Skarnveld glacier ice?", "glacier.pdf", "telescope"),
    ("What is the name of the control-room cat at Helioforge?", "reactor.docx", "Bolometer"),
]:
    res = a.vector_stores.search(vector_store_id=vs.id, query=query, max_num_results=3)
    check("VectorStoreSearchResultsPage", res)
    top = res.data[0]
    assert top.filename == name and top.file_id == in_store[name], (query, [(r.filename, r.score) for r in res.data])
    text = " ".join(" ".join(c.text for c in r.content) for r in res.data if r.file_id == in_store[name])
    assert phrase in " ".join(text.split()), (query, text[:300])
    assert 0 <= top.score <= 1, top

# script and style text of the HTML never reaches the index
res = a.vector_stores.search(vector_store_id=vs.id, query="SCRIPT_SENTINEL_MUST_NOT_BE_EXTRACTED STYLE_SENTINEL", max_num_results=20)
assert all("SENTINEL" not in c.text for r in res.data for c in r.content), res

# a compound filter: (kind == pdf or year >= 2000) and kind != docx -> the PDF only
res = a.vector_stores.search(
    vector_store_id=vs.id,
    query="Who made the lamp of the lighthouse?",
    filters={"type": "and", "filters": [
        {"type": "or", "filters": [
            {"type": "eq", "key": "kind", "value": "pdf"},
            {"type": "gte", "key": "year", "value": 2000},
        ]},
        {"type": "ne", "key": "kind", "value": "docx"},
    ]},
)
check("VectorStoreSearchResultsPage", res)
assert res.data and {r.filename for r in res.data} == {"glacier.pdf"}, [(r.filename, r.attributes) for r in res.data]
assert res.data[0].attributes == {"kind": "pdf", "year": 1962}, res.data[0]
res = a.vector_stores.search(
    vector_store_id=vs.id, query="lighthouse", filters={"type": "in", "key": "kind", "value": ["html", "docx"]},
    max_num_results=10,
)
assert res.data and {r.filename for r in res.data} <= {"lighthouse.html", "reactor.docx"}, res
# a score threshold above every score leaves nothing
res = a.vector_stores.search(vector_store_id=vs.id, query="apple", ranking_options={"score_threshold": 0.99})
assert res.data == [], res
raises(openai.BadRequestError, a.vector_stores.search, vector_store_id=vs.id, query="x",
       filters={"type": "regex", "key": "kind", "value": "p.*"}, says="regex")

# ---- attached files: list, filter by status, retrieve, attributes ---------
files = check("ListVectorStoreFilesResponse", a.vector_stores.files.list(vector_store_id=vs.id, filter="completed"))
assert len(files.data) == 4, files
assert a.vector_stores.files.list(vector_store_id=vs.id, filter="failed").data == []
f = check("VectorStoreFileObject", a.vector_stores.files.retrieve(file_id=uploaded["reactor.docx"], vector_store_id=vs.id))
assert f.attributes == {"kind": "docx", "year": 2031}, f
f = a.vector_stores.files.update(file_id=uploaded["reactor.docx"], vector_store_id=vs.id, attributes={"kind": "word"})
check("VectorStoreFileObject", f)
assert f.attributes == {"kind": "word"} and f.status == "completed", f
res = a.vector_stores.search(vector_store_id=vs.id, query="cat", filters={"type": "eq", "key": "kind", "value": "word"})
assert res.data and all(r.filename == "reactor.docx" for r in res.data), res
raw = a.vector_stores.files.with_raw_response.content(file_id=uploaded["lighthouse.html"], vector_store_id=vs.id)
validate("VectorStoreFileContentResponse", raw.http_response.json())
content = a.vector_stores.files.content(file_id=uploaded["lighthouse.html"], vector_store_id=vs.id)
text = " ".join(c.text or "" for c in content)
assert "Quince & Daughters" in " ".join(text.split()) and "SENTINEL" not in text, text[:400]

# ---- a chat retrieves from the vector store: it is a collection underneath --
chat_model = next(m.id for m in a.models.list().data
                  if m.id != "all-MiniLM-L6-v2" and (m.model_extra or {}).get("type") != "rag")
r = a.chat.completions.create(
    model=chat_model, max_tokens=16, temperature=0,
    messages=[{"role": "user", "content": "When was the Veltrian Crisp apple first grafted?"}],
    extra_body={"rag": {"collection": vs.id, "top_k": 2}},
)
cites = r.choices[0].message.model_extra["citations"]
assert cites and cites[0]["doc_id"] == in_store["orchard.md"], cites

# ---- cancelling a batch: nothing stays in progress, cancelled files leave no chunks
cvs = a.vector_stores.create(name="cancel")
cb = a.vector_stores.file_batches.create(vector_store_id=cvs.id, file_ids=list(uploaded.values()))
cb = check("VectorStoreFileBatchObject", a.vector_stores.file_batches.cancel(batch_id=cb.id, vector_store_id=cvs.id))
assert cb.status == "cancelled" and cb.file_counts.in_progress == 0, cb
assert cb.file_counts.cancelled + cb.file_counts.completed == 4 and cb.file_counts.total == 4, cb
cancelled = {f.id for f in a.vector_stores.file_batches.list_files(
    vector_store_id=cvs.id, batch_id=cb.id, filter="cancelled").data}
assert len(cancelled) == cb.file_counts.cancelled, cancelled
# a file cancelled while it was being processed: the worker removes what it wrote
deadline = time.time() + 30
while True:
    hits = {r.file_id for q in ["apple grafted", "lighthouse flashes", "glacier telescope", "control-room cat"]
            for r in a.vector_stores.search(vector_store_id=cvs.id, query=q, max_num_results=10).data}
    if not (hits & cancelled) or time.time() > deadline:
        break
    time.sleep(0.3)
assert not (hits & cancelled), (hits, cancelled)
a.vector_stores.delete(cvs.id)

# ---- stores: list, modify ----------------------------------------------------
stores = check("ListVectorStoresResponse", a.vector_stores.list())
assert vs.id in {s.id for s in stores.data}, stores
vs2 = check("VectorStoreObject", a.vector_stores.update(vector_store_id=vs.id, name="renamed", metadata={"team": "ops"}))
assert vs2.name == "renamed" and vs2.metadata == {"team": "ops"}, vs2

# ---- bad input: typed exceptions -------------------------------------------
raises(openai.NotFoundError, a.vector_stores.retrieve, "vs_doesnotexist")
raises(openai.NotFoundError, a.vector_stores.search, vector_store_id="vs_doesnotexist", query="x")
raises(openai.BadRequestError, a.vector_stores.create, name="x",
       chunking_strategy={"type": "semantic"}, says="chunking_strategy")
raises(openai.BadRequestError, a.vector_stores.create, name="x",
       chunking_strategy={"type": "static", "static": {"max_chunk_size_tokens": 50, "chunk_overlap_tokens": 0}})
raises(openai.NotFoundError, a.vector_stores.create, name="x", file_ids=["file-doesnotexist"])

# an unreadable PDF and a scanned one end `failed` with last_error, never crash
bad = a.vector_stores.create(name="bad")
for name in ["broken.pdf", "image-only.pdf"]:
    with open(fixture(name), "rb") as f:
        vf = a.vector_stores.files.upload_and_poll(vector_store_id=bad.id, file=f, poll_interval_ms=200)
    check("VectorStoreFileObject", vf)
    assert vf.status == "failed" and vf.last_error is not None and vf.last_error.code == "invalid_file", vf
    assert name in vf.last_error.message, vf.last_error
bad = a.vector_stores.retrieve(bad.id)
assert bad.file_counts.failed == 2 and bad.status == "completed", bad

# ---- tenant isolation: tenant B sees none of A's objects -------------------
NF = openai.NotFoundError
fid, vid = in_store["orchard.md"], vs.id
assert b.files.list().data == [] and b.vector_stores.list().data == []
for fn, args, kw in [
    (b.files.retrieve, (fid,), {}),
    (b.files.content, (fid,), {}),
    (b.files.delete, (fid,), {}),
    (b.vector_stores.retrieve, (vid,), {}),
    (b.vector_stores.update, (vid,), {"name": "stolen"}),
    (b.vector_stores.delete, (vid,), {}),
    (b.vector_stores.search, (vid,), {"query": "apple"}),
    (b.vector_stores.files.list, (vid,), {}),
    (b.vector_stores.files.create, (vid,), {"file_id": fid}),
    (b.vector_stores.files.retrieve, (), {"vector_store_id": vid, "file_id": fid}),
    (b.vector_stores.files.update, (), {"vector_store_id": vid, "file_id": fid, "attributes": {}}),
    (b.vector_stores.files.delete, (), {"vector_store_id": vid, "file_id": fid}),
    (b.vector_stores.files.content, (), {"vector_store_id": vid, "file_id": fid}),
    (b.vector_stores.file_batches.create, (vid,), {"file_ids": [fid]}),
    (b.vector_stores.file_batches.retrieve, (), {"vector_store_id": vid, "batch_id": batch.id}),
    (b.vector_stores.file_batches.cancel, (), {"vector_store_id": vid, "batch_id": batch.id}),
    (b.vector_stores.file_batches.list_files, (), {"vector_store_id": vid, "batch_id": batch.id}),
]:
    raises(NF, fn, *args, **kw)
# B's own store cannot attach A's file either
bvs = b.vector_stores.create(name="b")
raises(NF, b.vector_stores.files.create, vector_store_id=bvs.id, file_id=fid)
# and A still has everything, untouched
assert a.vector_stores.retrieve(vid).name == "renamed"

# ---- delete: file from store, store, file ----------------------------------
d = a.vector_stores.files.delete(file_id=uploaded["glacier.pdf"], vector_store_id=vs.id)
check("DeleteVectorStoreFileResponse", d)
assert d.deleted, d
res = a.vector_stores.search(vector_store_id=vs.id, query="brass telescope glacier", max_num_results=10)
assert all(r.filename != "glacier.pdf" for r in res.data), res
raises(NF, a.vector_stores.files.retrieve, file_id=uploaded["glacier.pdf"], vector_store_id=vs.id)
d = check("DeleteFileResponse", a.files.delete(uploaded["lighthouse.html"]))
assert d.deleted and d.id == uploaded["lighthouse.html"], d
# deleting a file removes it from its stores
raises(NF, a.vector_stores.files.retrieve, file_id=uploaded["lighthouse.html"], vector_store_id=vs.id)
raises(NF, a.files.retrieve, uploaded["lighthouse.html"])
d = check("DeleteVectorStoreResponse", a.vector_stores.delete(vs.id))
assert d.deleted, d
raises(NF, a.vector_stores.retrieve, vs.id)
raises(NF, a.vector_stores.search, vector_store_id=vs.id, query="apple")
print("files_sdk: ok")
