"""Files and Vector Stores across process boundaries, with the official
OpenAI Python SDK (run by tests/tests/files_e2e.rs):

- ``upload BASE FIXTURES``: uploads the four documents, creates a vector
  store and attaches them in one batch without waiting; prints the ids as
  JSON (the test then kills the gateway with SIGKILL).
- ``verify BASE FIXTURES STATE``: after the restart, every acknowledged
  file has its exact bytes, every attached file is still listed and ends
  ``completed`` (the restarted gateway resumed it) or ``failed`` with a
  reason, never vanishes, and each completed file's fact is searchable.
- ``mesh BASE1 BASE2 FIXTURES``: a file uploaded through one gateway
  replica is attached and searched through the other, and a response made
  through one is read, continued and deleted through the other (the state
  is the retriever's, not a gateway's).
"""
import json
import os
import sys
import time

import openai

FACTS = {
    "orchard.md": ("When was the Veltrian Crisp apple first grafted?", "1874"),
    "lighthouse.html": ("How often does the Tarnhollow lighthouse flash?", "nine seconds"),
    "glacier.pdf": ("What was found frozen in the Skarnveld glacier ice?", "telescope"),
    "reactor.docx": ("What is the name of the control-room cat at Helioforge?", "Bolometer"),
}


def client(base):
    return openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)


def read(fixtures, name):
    with open(os.path.join(fixtures, name), "rb") as f:
        return f.read()


def top_file(c, vs_id, query):
    res = c.vector_stores.search(vector_store_id=vs_id, query=query, max_num_results=3)
    return res.data[0] if res.data else None


def upload(base, fixtures):
    c = client(base)
    files = {n: c.files.create(file=(n, read(fixtures, n)), purpose="assistants").id for n in FACTS}
    vs = c.vector_stores.create(name="crash")
    batch = c.vector_stores.file_batches.create(vector_store_id=vs.id, file_ids=list(files.values()))
    print(json.dumps({"files": files, "vs": vs.id, "batch": batch.id}))


def verify(base, fixtures, state):
    c = client(base)
    s = json.loads(state)
    for name, fid in s["files"].items():
        assert c.files.retrieve(fid).filename == name
        assert c.files.content(fid).read() == read(fixtures, name), name
    deadline = time.time() + 180
    while True:
        batch = c.vector_stores.file_batches.retrieve(vector_store_id=s["vs"], batch_id=s["batch"])
        if batch.status != "in_progress" or time.time() > deadline:
            break
        time.sleep(0.3)
    assert batch.status == "completed", batch
    attached = {f.id: f for f in c.vector_stores.files.list(vector_store_id=s["vs"], limit=100).data}
    assert set(attached) == set(s["files"].values()), attached
    for name, fid in s["files"].items():
        f = attached[fid]
        assert f.status in ("completed", "failed"), f
        if f.status == "failed":
            assert f.last_error is not None and f.last_error.message, f
            continue
        query, phrase = FACTS[name]
        hit = top_file(c, s["vs"], query)
        assert hit is not None and hit.file_id == fid, (name, hit)
    assert batch.file_counts.completed == 4, batch
    print("verify: ok")


def mesh(base1, base2, fixtures):
    c1, c2 = client(base1), client(base2)
    fid = c1.files.create(file=("reactor.docx", read(fixtures, "reactor.docx")), purpose="assistants").id
    assert c2.files.retrieve(fid).filename == "reactor.docx"
    vs = c2.vector_stores.create(name="mesh")
    f = c2.vector_stores.files.create_and_poll(vector_store_id=vs.id, file_id=fid, poll_interval_ms=200)
    assert f.status == "completed", f
    for c in (c1, c2):
        hit = top_file(c, vs.id, FACTS["reactor.docx"][0])
        assert hit is not None and hit.file_id == fid and hit.filename == "reactor.docx", hit
        assert FACTS["reactor.docx"][1] in " ".join(p.text for p in hit.content), hit
    assert c1.vector_stores.retrieve(vs.id).file_counts.completed == 1
    # a response made through one replica is read and continued through
    # the other: stored responses are the retriever's too
    model = next(m.id for m in c1.models.list().data
                 if m.id != "all-MiniLM-L6-v2" and (m.model_extra or {}).get("type") != "rag")
    r = c1.responses.create(model=model, input=FACTS["reactor.docx"][0], max_output_tokens=8,
                            tools=[{"type": "file_search", "vector_store_ids": [vs.id]}])
    assert r.output[1].content[0].annotations[0].file_id == fid, r.output
    assert c2.responses.retrieve(r.id).output_text == r.output_text
    follow = c2.responses.create(model=model, input="Thanks.", max_output_tokens=4, previous_response_id=r.id)
    assert follow.usage.input_tokens > r.usage.output_tokens, (follow.usage, r.usage)
    c2.responses.delete(r.id)
    try:
        c1.responses.retrieve(r.id)
        raise AssertionError("response deleted through one replica, still there through the other")
    except openai.NotFoundError:
        pass
    c1.vector_stores.delete(vs.id)
    try:
        c2.vector_stores.retrieve(vs.id)
        raise AssertionError("deleted through one replica, still there through the other")
    except openai.NotFoundError:
        pass
    print("mesh: ok")


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    {"upload": upload, "verify": verify, "mesh": mesh}[mode](*args)
