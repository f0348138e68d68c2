"""The official OpenAI Python SDK against ragmesh's /v1/embeddings.

Run by tests/tests/embedder_e2e.rs with the server's base URL as argv[1].
Exits non-zero (assertion) on any mismatch.
"""
import math
import sys

import openai

base = sys.argv[1]
client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)


def norm(v):
    return math.sqrt(sum(x * x for x in v))


def cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / (norm(a) * norm(b))


# default encoding: the SDK asks for base64 and decodes it itself
r = client.embeddings.create(model="all-MiniLM-L6-v2", input="The cat sits on the mat.")
assert len(r.data) == 1 and len(r.data[0].embedding) == 384, r
assert abs(norm(r.data[0].embedding) - 1.0) < 1e-4
assert r.usage.prompt_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens
assert r.model == "all-MiniLM-L6-v2"

# float encoding, several inputs, order kept, similar sentences closer
texts = ["A cat is sitting on a mat.", "Stock markets fell sharply today.", "The cat sits on the mat."]
f = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts, encoding_format="float")
assert [d.index for d in f.data] == [0, 1, 2]
assert cos(f.data[2].embedding, r.data[0].embedding) > 0.9999, "float and base64 differ"
assert cos(f.data[0].embedding, r.data[0].embedding) > cos(f.data[1].embedding, r.data[0].embedding)

# dimensions equal to the model's is fine; anything else is a typed error
client.embeddings.create(model="all-MiniLM-L6-v2", input="x", dimensions=384)
try:
    client.embeddings.create(model="all-MiniLM-L6-v2", input="x", dimensions=128)
    raise AssertionError("dimensions=128 accepted")
except openai.BadRequestError as e:
    assert e.status_code == 400 and "dimensions" in str(e)

try:
    client.embeddings.create(model="no-such-model", input="x")
    raise AssertionError("unknown model accepted")
except openai.NotFoundError as e:
    assert e.status_code == 404

try:
    client.embeddings.create(model="all-MiniLM-L6-v2", input=[])
    raise AssertionError("empty input accepted")
except openai.BadRequestError:
    pass

print("openai sdk embeddings: ok")
