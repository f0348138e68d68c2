"""The official OpenAI Python SDK against the ragmesh gateway.

Run by tests/tests/gateway_e2e.rs with the gateway's base URL, the chat
model id and a RAG profile name as arguments. The profile's collection
holds the fact "The Zorblax reactor ... 742 kelvin" (ingested by the Rust
test). Exits non-zero (assertion) on any mismatch.
"""
import sys

import openai

base, chat_model, profile = sys.argv[1:4]
client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)

# models: the chat model, the embedding model and the profile
ids = {m.id for m in client.models.list().data}
assert {chat_model, "all-MiniLM-L6-v2", profile} <= ids, ids
assert client.models.retrieve(profile).id == profile

# chat, non-streaming, greedy
msgs = [{"role": "user", "content": "Name three colours."}]
r = client.chat.completions.create(model=chat_model, messages=msgs, max_tokens=12, temperature=0)
c = r.choices[0]
assert r.object == "chat.completion" and c.message.role == "assistant", r
assert c.message.content, r
assert c.finish_reason in ("stop", "length"), r
assert r.usage.completion_tokens <= 12 and r.usage.prompt_tokens > 0, r.usage
assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens

# streaming: same greedy text, role first, finish reason last, usage chunk
stream = client.chat.completions.create(
    model=chat_model, messages=msgs, max_tokens=12, temperature=0, stream=True,
    stream_options={"include_usage": True},
)
chunks = list(stream)
assert chunks[0].choices[0].delta.role == "assistant", chunks[0]
text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
assert text == c.message.content, (text, c.message.content)
finals = [ch for ch in chunks if ch.choices and ch.choices[0].finish_reason]
assert len(finals) == 1 and finals[0].choices[0].finish_reason == c.finish_reason
assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == r.usage.completion_tokens

# logprobs on request
r = client.chat.completions.create(
    model=chat_model, messages=msgs, max_tokens=4, temperature=0, logprobs=True, top_logprobs=2
)
lp = r.choices[0].logprobs.content
assert len(lp) == r.usage.completion_tokens and len(lp[0].top_logprobs) == 2, lp
assert lp[0].logprob <= 0.0 and lp[0].top_logprobs[0].logprob >= lp[0].top_logprobs[1].logprob

# stop sequence: the stop text is not emitted
r = client.chat.completions.create(
    model=chat_model, messages=[{"role": "user", "content": "Count from 1 to 10, separated by commas."}],
    max_tokens=40, temperature=0, stop=["5"],
)
assert "5" not in r.choices[0].message.content and r.choices[0].finish_reason == "stop", r

# text completions
r = client.completions.create(model=chat_model, prompt="The capital of France is", max_tokens=6, temperature=0)
assert r.object == "text_completion" and r.choices[0].text, r
s = list(client.completions.create(model=chat_model, prompt="The capital of France is", max_tokens=6,
                                   temperature=0, stream=True))
assert "".join(x.choices[0].text for x in s if x.choices) == r.choices[0].text

# embeddings
e = client.embeddings.create(model="all-MiniLM-L6-v2", input=["a", "b"])
assert len(e.data) == 2 and len(e.data[0].embedding) == 384

# RAG through the profile: an unmodified client picks the model name
q = [{"role": "user", "content": "At what temperature does the Zorblax reactor run?"}]
r = client.chat.completions.create(model=profile, messages=q, max_tokens=48)
m = r.choices[0].message
cites = m.model_extra.get("citations") or []
assert cites and cites[0]["doc_id"] == "zorblax.md", cites
assert "742" in m.content, m.content
assert r.model_extra["rag"]["used"] >= 1, r.model_extra
# the same question to the plain model: no sources, no fact
p = client.chat.completions.create(model=chat_model, messages=q, max_tokens=48, temperature=0)
assert "742" not in p.choices[0].message.content, p.choices[0].message.content
assert "citations" not in (p.choices[0].message.model_extra or {})
# streaming RAG: citations in the final chunk
chunks = list(client.chat.completions.create(model=profile, messages=q, max_tokens=48, stream=True))
final = [ch for ch in chunks if ch.choices and ch.choices[0].finish_reason][0]
assert final.model_extra["citations"][0]["doc_id"] == "zorblax.md", final
# a per-request override through extra_body
r = client.chat.completions.create(
    model=chat_model, messages=q, max_tokens=48, temperature=0,
    extra_body={"rag": {"collection": "facts", "top_k": 2, "hybrid": False}},
)
assert r.choices[0].message.model_extra["citations"][0]["doc_id"] == "zorblax.md"
assert r.model_extra["rag"]["retrieved"] <= 2

# errors surface as the SDK's typed exceptions
def expect(exc, **kw):
    try:
        client.chat.completions.create(**kw)
    except exc as e:
        body = e.body if isinstance(e.body, dict) else {}
        assert "message" in body, body
        return e
    raise AssertionError(f"expected {exc.__name__} for {kw}")

expect(openai.NotFoundError, model="no-such-model", messages=msgs)
expect(openai.BadRequestError, model=chat_model, messages=msgs, temperature=5)
expect(openai.BadRequestError, model=chat_model, messages=msgs, n=2)
expect(openai.BadRequestError, model=chat_model, messages=[])
expect(openai.BadRequestError, model=chat_model, messages=msgs, max_tokens=10**9)
expect(openai.NotFoundError, model=chat_model, messages=msgs, extra_body={"rag": {"collection": "nope"}})
try:
    client.embeddings.create(model="no-such-embedder", input="x")
    raise AssertionError("unknown embedding model accepted")
except openai.NotFoundError:
    pass
print("gateway SDK checks passed")
