"""The official OpenAI Python SDK against the gateway's Responses API.

Run by tests/tests/responses_e2e.rs with: the gateway's base URL, the key of
tenant A, the key of tenant B, the fixtures folder (tests/fixtures/documents)
and the name of the gateway's RAG profile. Over a vector store of invented
facts: file_search answers with the fact and a file_citation naming the file,
include=["file_search_call.results"], streaming (every raw event validated
against OpenAI's ResponseStreamEvent schema, in order, with sequence
numbers), previous_response_id, instructions, max_output_tokens, retrieve /
input_items / delete, store=false, a RAG profile as the model, typed errors
and tenant isolation. Exits non-zero on any mismatch.
"""
import json
import os
import sys

import httpx
import openai

from openai_schemas import validate
from sdk_checks import check, raises

base, key_a, key_b, fixtures, profile = sys.argv[1:6]
a = openai.OpenAI(base_url=base + "/v1", api_key=key_a, max_retries=0)
b = openai.OpenAI(base_url=base + "/v1", api_key=key_b, max_retries=0)


def raw_stream(key, body):
    """POST /v1/responses with stream=true: the (event, data) pairs as sent."""
    out = []
    with httpx.stream("POST", base + "/v1/responses", json=dict(body, stream=True),
                      headers={"Authorization": f"Bearer {key}"}, timeout=300) as r:
        assert r.status_code == 200, (r.status_code, r.read())
        assert r.headers["content-type"].startswith("text/event-stream"), r.headers
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: "):
                out.append((event, json.loads(line[len("data: "):])))
                event = None
    return out


chat_model = next(m.id for m in a.models.list().data
                  if m.id != "all-MiniLM-L6-v2" and (m.model_extra or {}).get("type") != "rag")

# ---- a vector store of two files -------------------------------------------
vs = a.vector_stores.create(name="facts")
ids = {}
for name in ["orchard.md", "glacier.pdf"]:
    with open(os.path.join(fixtures, name), "rb") as f:
        vf = a.vector_stores.files.upload_and_poll(vector_store_id=vs.id, file=f, poll_interval_ms=200)
    assert vf.status == "completed", vf
    ids[name] = vf.id
tools = [{"type": "file_search", "vector_store_ids": [vs.id]}]
Q = "When was the Veltrian Crisp apple first grafted?"

# ---- file_search: the fact, cited -------------------------------------------
r = check("Response", a.responses.create(model=chat_model, input=Q, tools=tools, temperature=0,
                                         max_output_tokens=48, metadata={"case": "first"}))
assert r.status == "completed" and r.object == "response" and r.id.startswith("resp_"), r
assert [o.type for o in r.output] == ["file_search_call", "message"], r.output
call, msg = r.output
assert call.status == "completed" and call.queries == [Q] and call.results is None, call
assert msg.role == "assistant" and msg.status == "completed", msg
ann = msg.content[0].annotations
assert ann and ann[0].type == "file_citation", ann
assert ann[0].file_id == ids["orchard.md"] and ann[0].filename == "orchard.md", ann
assert all(0 <= x.index <= len(r.output_text) for x in ann), ann
assert "1874" in r.output_text, r.output_text
u = r.usage
assert u.input_tokens > 0 and u.output_tokens > 0 and u.total_tokens == u.input_tokens + u.output_tokens, u
assert r.metadata == {"case": "first"} and r.tools[0].vector_store_ids == [vs.id], r

# include: the search results are in the call, as many as asked
r2 = check("Response", a.responses.create(
    model=chat_model, input=Q, temperature=0, max_output_tokens=16, include=["file_search_call.results"],
    tools=[{"type": "file_search", "vector_store_ids": [vs.id], "max_num_results": 1}]))
res = r2.output[0].results
assert len(res) == 1 and res[0].file_id == ids["orchard.md"] and res[0].filename == "orchard.md", res
assert 0 <= res[0].score <= 1 and res[0].text, res[0]
r3 = a.responses.create(model=chat_model, input=Q, temperature=0, max_output_tokens=4, tools=tools,
                        include=["file_search_call.results"])
res = r3.output[0].results
assert res == sorted(res, key=lambda x: -x.score), res
assert any("1874" in " ".join(x.text.split()) for x in res if x.file_id == ids["orchard.md"]), res

# a filter no chunk passes: nothing found, nothing cited
rf = check("Response", a.responses.create(
    model=chat_model, input=Q, temperature=0, max_output_tokens=16, include=["file_search_call.results"],
    tools=[{"type": "file_search", "vector_store_ids": [vs.id],
            "filters": {"type": "eq", "key": "kind", "value": "absent"}}]))
assert rf.output[0].results == [] and rf.output[1].content[0].annotations == [], rf.output

# ---- streaming: the SDK's helper and the raw events -------------------------
with a.responses.stream(model=chat_model, input=Q, tools=tools, temperature=0, max_output_tokens=48) as s:
    seen = [e.type for e in s]
    final = s.get_final_response()
assert final.output_text == r.output_text, (final.output_text, r.output_text)
assert final.output[1].content[0].annotations[0].file_id == ids["orchard.md"], final.output

events = raw_stream(key_a, {"model": chat_model, "input": Q, "tools": tools, "temperature": 0,
                            "max_output_tokens": 48})
types = [d["type"] for _, d in events]
assert [n for n, _ in events] == types, "each SSE event line names its type"
assert [d["sequence_number"] for _, d in events] == list(range(len(events))), events
for _, d in events:
    validate("ResponseStreamEvent", d)
head = ["response.created", "response.in_progress", "response.output_item.added",
        "response.file_search_call.in_progress", "response.file_search_call.searching",
        "response.file_search_call.completed", "response.output_item.done",
        "response.output_item.added", "response.content_part.added"]
assert types[:len(head)] == head, types
rest = types[len(head):]
deltas = [t for t in rest if t == "response.output_text.delta"]
assert deltas and rest[:len(deltas)] == deltas, rest
tail = [t for t in rest[len(deltas):] if t != "response.output_text.annotation.added"]
assert tail == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                "response.completed"], rest
assert "response.output_text.annotation.added" in rest, rest
text = "".join(d["delta"] for _, d in events if d["type"] == "response.output_text.delta")
done = next(d for _, d in events if d["type"] == "response.output_text.done")
completed = events[-1][1]["response"]
assert text == done["text"] == r.output_text, (text, done["text"], r.output_text)
assert completed["status"] == "completed" and completed["usage"]["output_tokens"] > 0, completed
assert events[0][1]["response"]["status"] == "in_progress" and events[0][1]["response"]["output"] == []
assert seen[0] == "response.created" and seen[-1] == "response.completed", seen
# the streamed response was stored like any other
assert a.responses.retrieve(completed["id"]).output_text == text

# ---- conversation state ------------------------------------------------------
first = a.responses.create(model=chat_model, input="My name is Quillon Varga.", max_output_tokens=8, temperature=0)
follow = check("Response", a.responses.create(model=chat_model, previous_response_id=first.id,
                                              input="What is my name?", max_output_tokens=12, temperature=0))
alone = a.responses.create(model=chat_model, input="What is my name?", max_output_tokens=12, temperature=0)
assert follow.previous_response_id == first.id, follow
# the earlier turn and its answer are in the prompt: more input tokens
# than the same question alone, by at least the earlier turn's own
assert follow.usage.input_tokens >= alone.usage.input_tokens + first.usage.output_tokens + 3, \
    (follow.usage, alone.usage, first.usage)
# and the chain goes on
third = a.responses.create(model=chat_model, previous_response_id=follow.id, input="Thanks.",
                           max_output_tokens=4, temperature=0)
assert third.usage.input_tokens > follow.usage.input_tokens, (third.usage, follow.usage)

# ---- instructions and max_output_tokens -------------------------------------
# instructions are the conversation's system turn: the same prompt as a
# developer message, and a different one from none
rule = ("You are the pirate captain of the ship Salty Gull. Always answer like a pirate, "
        "in one short sentence, and mention the sea.")
instr = a.responses.create(model=chat_model, input="Say hello.", max_output_tokens=8, temperature=0,
                           instructions=rule)
as_turn = a.responses.create(model=chat_model, max_output_tokens=8, temperature=0,
                             input=[{"role": "developer", "content": rule}, {"role": "user", "content": "Say hello."}])
plain = a.responses.create(model=chat_model, input="Say hello.", max_output_tokens=8, temperature=0)
assert instr.instructions == rule, instr
assert instr.usage.input_tokens == as_turn.usage.input_tokens != plain.usage.input_tokens, \
    (instr.usage, as_turn.usage, plain.usage)
assert instr.output_text == as_turn.output_text, (instr.output_text, as_turn.output_text)
# instructions are not an input item
assert [i.role for i in a.responses.input_items.list(instr.id).data] == ["user"]
short = check("Response", a.responses.create(model=chat_model, input="Count from one to one hundred.",
                                             max_output_tokens=5, temperature=0))
assert short.status == "incomplete" and short.incomplete_details.reason == "max_output_tokens", short
assert short.usage.output_tokens == 5 and short.max_output_tokens == 5, short.usage

# ---- retrieve, input items, delete --------------------------------------------
got = check("Response", a.responses.retrieve(r.id))
assert got.output_text == r.output_text and got.output[1].content[0].annotations == ann, got
items = a.responses.input_items.list(r.id)
validate("ResponseItemList", a.responses.input_items.with_raw_response.list(r.id).http_response.json())
assert len(items.data) == 1 and items.data[0].role == "user", items
assert items.data[0].content[0].type == "input_text" and items.data[0].content[0].text == Q, items
multi = a.responses.create(model=chat_model, max_output_tokens=4, temperature=0, input=[
    {"role": "developer", "content": "Be brief."},
    {"role": "user", "content": [{"type": "input_text", "text": "Name a colour."}]},
    {"role": "assistant", "content": "Red."},
    {"role": "user", "content": "Another one."},
])
raw = a.responses.input_items.with_raw_response.list(multi.id, order="asc").http_response.json()
validate("ResponseItemList", raw)
assert [i["role"] for i in raw["data"]] == ["developer", "user", "assistant", "user"], raw
desc = a.responses.input_items.list(multi.id, limit=2)
assert [i.role for i in desc.data] == ["user", "assistant"] and desc.has_more, desc
d = a.responses.delete(r.id)
assert d is None
raises(openai.NotFoundError, a.responses.retrieve, r.id)
raises(openai.NotFoundError, a.responses.input_items.list, r.id)
raises(openai.NotFoundError, a.responses.delete, r.id)
e = raises(openai.NotFoundError, a.responses.create, model=chat_model, input="x", previous_response_id=r.id)
assert e.body["param"] == "previous_response_id", e.body
unstored = a.responses.create(model=chat_model, input="Hi.", max_output_tokens=4, store=False)
raises(openai.NotFoundError, a.responses.retrieve, unstored.id)

# ---- a RAG profile as the model ------------------------------------------------
h = {"Authorization": f"Bearer {key_a}"}
assert httpx.post(base + "/v1/collections", json={"name": "facts"}, headers=h).status_code == 200
docs = {"documents": [
    {"id": "zorblax.md", "metadata": {"topic": "energy"},
     "text": "# Zorblax reactor\n\nThe Zorblax reactor on Kepler station runs at exactly 742 kelvin."},
    {"id": "quillon.txt", "metadata": {"topic": "books"},
     "text": "The Quillon library in Dunmore opens at nine in the morning on Tuesdays."},
]}
assert httpx.post(base + "/v1/collections/facts/documents", json=docs, headers=h, timeout=120).status_code == 200
rp = check("Response", a.responses.create(model=profile, input="At what temperature does the Zorblax reactor run?",
                                          max_output_tokens=48))
assert rp.model == profile and [o.type for o in rp.output] == ["message"], rp.output
assert "742" in rp.output_text, rp.output_text
assert rp.output[0].content[0].annotations[0].file_id == "zorblax.md", rp.output[0].content[0].annotations
assert rp.model_extra["rag"]["collection"] == "facts", rp.model_extra

# ---- bad input: typed exceptions naming the field ------------------------------
for exc, kw, param in [
    (openai.NotFoundError, {"tools": [{"type": "file_search", "vector_store_ids": ["vs_doesnotexist"]}]}, "tools"),
    (openai.BadRequestError, {"tools": [{"type": "web_search"}]}, "tools"),
    (openai.BadRequestError, {"tools": [{"type": "file_search", "vector_store_ids": [vs.id],
                                         "filters": {"type": "regex", "key": "a", "value": "b"}}]}, "filters"),
    (openai.BadRequestError, {"input": 42}, "input"),
    (openai.BadRequestError, {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
     "input"),
    (openai.BadRequestError, {"max_output_tokens": 0}, "max_output_tokens"),
    (openai.NotFoundError, {"model": "no-such-model"}, "model"),
]:
    args = dict({"model": chat_model, "input": "x"}, **kw)
    e = raises(exc, a.responses.create, **args)
    assert e.body["param"] == param, (kw, e.body)

# ---- tenant isolation: B sees none of A's responses -----------------------------
for fn, args, kw in [
    (b.responses.retrieve, (got.id,), {}),
    (b.responses.input_items.list, (got.id,), {}),
    (b.responses.delete, (multi.id,), {}),
    (b.responses.create, (), {"model": chat_model, "input": "x", "previous_response_id": multi.id}),
    (b.responses.create, (), {"model": chat_model, "input": "x", "tools": tools}),
]:
    raises(openai.NotFoundError, fn, *args, **kw)
# the profile's collection is A's: B's profile answer retrieves nothing of it
try:
    rb = b.responses.create(model=profile, input="At what temperature does the Zorblax reactor run?",
                            max_output_tokens=16)
    assert all(o.type != "message" or not o.content[0].annotations for o in rb.output), rb.output
except openai.NotFoundError as e:
    assert "facts" in str(e), e
assert a.responses.retrieve(multi.id).id == multi.id
print("responses_sdk: ok")
