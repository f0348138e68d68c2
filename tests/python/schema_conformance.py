"""Every body the gateway sends, checked against OpenAI's published schemas.

Run by tests/tests/gateway_schema_e2e.rs with the gateway's base URL, the
chat model id and a RAG profile (whose collection holds the test facts).
Bodies are read raw (not through the SDK, which forgives missing fields)
and validated with openai_schemas.validate (see its docstring for where
the validator follows the real API over the spec). Each JSON body and each
SSE chunk type is covered: role, content, logprobs, final and usage chunks.
Exits non-zero (assertion) naming the request and the violations.
"""
import json
import sys
import urllib.error
import urllib.request

from openai_schemas import validate

base, chat_model, profile = sys.argv[1:4]
checked = []


def call(method, path, body=None, raw=None, headers=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("content-type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, r.headers.get("content-type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type", ""), e.read()


def json_body(name, method, path, body=None, status=200, **kw):
    code, ctype, data = call(method, path, body, **kw)
    assert code == status, f"{method} {path}: {code} (wanted {status}): {data[:300]!r}"
    assert ctype.startswith("application/json"), f"{method} {path}: content-type {ctype}"
    obj = json.loads(data)
    validate(name, obj)
    checked.append(f"{code} {method} {path} -> {name}")
    return obj


def sse(name, path, body):
    """The `data:` events of a stream, each validated; `[DONE]` last."""
    code, ctype, data = call("POST", path, body)
    assert code == 200 and ctype.startswith("text/event-stream"), (code, ctype, data[:300])
    events = [line[len("data: "):] for line in data.decode().splitlines()
              if line.startswith("data: ")]
    assert events and events[-1] == "[DONE]", events[-3:]
    chunks = [json.loads(e) for e in events[:-1]]
    for i, c in enumerate(chunks):
        try:
            validate(name, c)
        except AssertionError as e:
            raise AssertionError(f"POST {path} chunk {i}: {c}\n{e}") from None
    checked.append(f"200 POST {path} stream ({len(chunks)} chunks) -> {name}")
    return chunks


msgs = [{"role": "user", "content": "Name three colours."}]
chat = "/v1/chat/completions"

# chat, JSON: plain, with logprobs, with retrieval (citations + rag)
json_body("CreateChatCompletionResponse", "POST", chat,
          {"model": chat_model, "messages": msgs, "max_tokens": 8, "temperature": 0})
r = json_body("CreateChatCompletionResponse", "POST", chat,
              {"model": chat_model, "messages": msgs, "max_tokens": 4, "temperature": 0,
               "logprobs": True, "top_logprobs": 2})
assert r["choices"][0]["logprobs"]["content"], r
r = json_body("CreateChatCompletionResponse", "POST", chat,
              {"model": profile, "max_tokens": 24,
               "messages": [{"role": "user", "content": "How hot is the Zorblax reactor?"}]})
assert r["choices"][0]["message"]["citations"], r

# chat, SSE: role, content and final chunks, logprobs chunks, usage chunk
chunks = sse("CreateChatCompletionStreamResponse", chat,
             {"model": chat_model, "messages": msgs, "max_tokens": 6, "temperature": 0,
              "stream": True, "logprobs": True, "top_logprobs": 1,
              "stream_options": {"include_usage": True}})
assert chunks[0]["choices"][0]["delta"].get("role") == "assistant", chunks[0]
assert any(c["choices"] and c["choices"][0]["logprobs"] for c in chunks), chunks
assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0, chunks[-1]
assert any(c["choices"] and c["choices"][0]["finish_reason"] for c in chunks), chunks
sse("CreateChatCompletionStreamResponse", chat,
    {"model": profile, "max_tokens": 8, "stream": True,
     "messages": [{"role": "user", "content": "How hot is the Zorblax reactor?"}]})

# text completions, JSON and SSE (each with logprobs)
json_body("CreateCompletionResponse", "POST", "/v1/completions",
          {"model": chat_model, "prompt": "The sky is", "max_tokens": 4, "temperature": 0,
           "logprobs": 2})
chunks = sse("CreateCompletionStreamResponse", "/v1/completions",
             {"model": chat_model, "prompt": "The sky is", "max_tokens": 4, "temperature": 0,
              "stream": True, "logprobs": 1, "stream_options": {"include_usage": True}})
assert chunks[-1]["usage"]["completion_tokens"] > 0, chunks[-1]

# embeddings, float and base64 (a string in the real API)
r = json_body("CreateEmbeddingResponse", "POST", "/v1/embeddings",
              {"model": "all-MiniLM-L6-v2", "input": ["a", "b"]})
assert isinstance(r["data"][0]["embedding"], list), r
r = json_body("CreateEmbeddingResponse", "POST", "/v1/embeddings",
              {"model": "all-MiniLM-L6-v2", "input": "a", "encoding_format": "base64"})
assert isinstance(r["data"][0]["embedding"], str), r

# models
models = json_body("ListModelsResponse", "GET", "/v1/models")
for m in models["data"]:
    json_body("Model", "GET", "/v1/models/" + m["id"])

# errors: 400, 404, 405, 409, 413 (401 and 429 need keys; gateway_errors_e2e covers them)
err = "ErrorResponse"
json_body(err, "POST", chat, {"model": chat_model, "messages": []}, status=400)
json_body(err, "POST", chat, raw=b"{not json", status=400)
json_body(err, "POST", chat, {"model": "no-such-model", "messages": msgs}, status=404)
json_body(err, "GET", "/v1/models/no-such-model", status=404)
json_body(err, "GET", "/v1/nope", status=404)
json_body(err, "DELETE", "/v1/models", status=405)
json_body(err, "POST", "/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": [[1, 2]]},
          status=400)
json_body(err, "POST", "/v1/completions",
          {"model": chat_model, "prompt": "x", "max_tokens": 10 ** 6}, status=400)
json_body(err, "POST", "/v1/collections", {"name": "facts"}, status=409)
# the test starts the gateway with --max-body-bytes 65536
json_body(err, "POST", chat, raw=b'{"model": "' + b"x" * 70_000 + b'"}', status=413)

print("\n".join(checked))
print(f"schema conformance: {len(checked)} requests, every body valid")
