"""The chart's `helm test`: GET /v1/models, then one short chat with a chat
model, through the gateway Service (standard library only). Environment:
GATEWAY_URL, MODEL (optional: the first chat model listed), MAX_TOKENS,
RAGMESH_API_KEY (optional)."""
import json
import os
import sys
import time
import urllib.error
import urllib.request

URL = os.environ["GATEWAY_URL"].rstrip("/")
KEY = os.environ.get("RAGMESH_API_KEY", "")


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    deadline = time.monotonic() + 120
    while True:
        req = urllib.request.Request(URL + path, data=data, method=method)
        req.add_header("content-type", "application/json")
        if KEY:
            req.add_header("authorization", "Bearer " + KEY)
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            if e.code not in (429, 503) or time.monotonic() > deadline:
                sys.exit(f"test: {method} {path}: HTTP {e.code}: {e.read().decode(errors='replace')}")
        except (urllib.error.URLError, OSError) as e:
            if time.monotonic() > deadline:
                sys.exit(f"test: {method} {path}: {e}")
        time.sleep(2)


models = call("GET", "/v1/models")
ids = [m["id"] for m in models.get("data", [])]
model = os.environ.get("MODEL") or next(
    (m["id"] for m in models.get("data", []) if m.get("type") == "chat"), None)
if not model:
    sys.exit(f"test: /v1/models lists no chat model: {ids}")
print(f"test: /v1/models: {ids}")
answer = call("POST", "/v1/chat/completions", {
    "model": model,
    "max_tokens": int(os.environ.get("MAX_TOKENS", "8")),
    "messages": [{"role": "user", "content": "Say hello."}],
})
text = answer["choices"][0]["message"]["content"]
if not isinstance(text, str):
    sys.exit(f"test: chat answer has no text: {answer}")
print(f"test: chat with {model}: {text!r} ({answer.get('usage')})")
