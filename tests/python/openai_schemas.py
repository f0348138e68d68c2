"""Validate response bodies against OpenAI's published component schemas.

The schemas are vendored, unmodified, in
tests/fixtures/openai-openapi/schemas.json (see its "source" and
scripts/extract-openai-schemas.py). ``validate(name, obj)`` raises
AssertionError listing each violation as JSON path + reason.

Where the spec and the real API differ, the validator follows the real API
(the rewrites are applied to an in-memory copy, never to the fixture):

(a) The real API sends ``null`` for unset optional fields, so every property
    that is not in its object's ``required`` list also accepts null.
(b) With ``encoding_format: "base64"`` the API sends ``Embedding.embedding``
    as a base64 string; the spec only allows an array of numbers.
(c) The document is OpenAPI 3.1 (JSON Schema 2020-12), yet the stream schema
    still uses the 3.0 keyword ``nullable: true``, which 2020-12 ignores; it
    is honoured (``CreateChatCompletionStreamResponse`` ``choices[].
    finish_reason``, ``logprobs`` and ``usage`` are really null mid-stream).
(d) Streamed legacy completions reuse ``CreateCompletionResponse`` but carry
    ``finish_reason: null`` until the last chunk. The spec has no schema for
    them; ``CreateCompletionStreamResponse`` (validator-only, not in the spec)
    is ``CreateCompletionResponse`` with that one field nullable.
(e) ``CompoundFilter`` (reached from ``Response`` via the file_search tool's
    ``filters``) nests itself with the 2019-09 pair ``$recursiveAnchor`` /
    ``$recursiveRef: "#"``, which 2020-12 ignores (so the nested branch
    would accept anything and make its ``oneOf`` ambiguous). Each
    ``$recursiveRef: "#"`` inside a schema marked ``$recursiveAnchor`` is
    read as a ``$ref`` to that schema itself, as the spec intends.

``format`` (e.g. "unixtime") and OpenAPI-only keywords (``x-*``) are not
asserted; ``discriminator`` only picks which ``oneOf`` branch's errors are
reported. Most schemas allow extension fields (``citations``, ``rag``, ...),
but a few set ``additionalProperties: false`` and reject them:
``VectorStoreSearchResultsPage``, ``VectorStoreSearchResultItem``,
``VectorStoreSearchResultContentObject``, the chunking strategies
(``StaticChunkingStrategy[ResponseParam]``,
``OtherChunkingStrategyResponseParam``) and, inside ``Response``, the
filter and MCP-tool-filter schemas.
"""
import copy
import json
import os

from jsonschema import Draft202012Validator

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       "..", "fixtures", "openai-openapi", "schemas.json")
NULL = {"type": "null"}


def _or_null(schema):
    return {"anyOf": [schema, NULL]}


def _rewrite(node):
    """Post-order: refs to #/$defs, (c) nullable, (a) optional => nullable."""
    if isinstance(node, list):
        return [_rewrite(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: _rewrite(v) for k, v in node.items()}
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        node["$ref"] = "#/$defs/" + ref.rsplit("/", 1)[1]
    if node.pop("nullable", False):
        node = _or_null(node)
    props = node.get("properties")
    if isinstance(props, dict):
        required = set(node.get("required", []))
        for key in props:
            if key not in required:
                props[key] = _or_null(props[key])
    return node


def _load():
    with open(FIXTURE, encoding="utf-8") as f:
        schemas = copy.deepcopy(json.load(f)["schemas"])
    # (b) base64 embeddings (a required property, so not wrapped by (a))
    emb = schemas["Embedding"]["properties"]
    emb["embedding"] = {"anyOf": [emb["embedding"], {
        "type": "string", "pattern": "^[A-Za-z0-9+/]*={0,2}$"}]}
    # (d) streamed legacy completions
    stream = copy.deepcopy(schemas["CreateCompletionResponse"])
    choice = stream["properties"]["choices"]["items"]["properties"]
    choice["finish_reason"] = {"anyOf": [choice["finish_reason"], NULL]}
    schemas["CreateCompletionStreamResponse"] = stream
    # (e) $recursiveRef "#" => $ref to the enclosing $recursiveAnchor schema
    for name, schema in schemas.items():
        if schema.get("$recursiveAnchor") is True:
            schemas[name] = _recursive_to_ref(schema, name)
    return _rewrite(schemas)


def _recursive_to_ref(node, name):
    if isinstance(node, list):
        return [_recursive_to_ref(v, name) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: _recursive_to_ref(v, name) for k, v in node.items()}
    if node.pop("$recursiveRef", None) == "#":
        node["$ref"] = "#/components/schemas/" + name
    return node


def _no_recursive_refs(node):
    """Fail loudly if a $recursiveRef survived (e): 2020-12 would ignore it."""
    if isinstance(node, dict):
        if "$recursiveRef" in node:
            raise ValueError(f"unhandled $recursiveRef in {node!r:.200}")
        for v in node.values():
            _no_recursive_refs(v)
    elif isinstance(node, list):
        for v in node:
            _no_recursive_refs(v)


DEFS = _load()
_no_recursive_refs(DEFS)
_validators = {}


def _leaves(err):
    """Descend into anyOf/oneOf: when exactly one branch fits the
    instance's type (e.g. the object branch of "object or null") or, for a
    ``discriminator``, its tag (e.g. ``type: "message"`` of ``OutputItem``),
    report that branch's errors instead of "not valid under any of the
    schemas"."""
    if err.validator in ("anyOf", "oneOf") and err.context:
        branches = {}
        for sub in err.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        fitting = [b for b in branches.values()
                   if not any(e.validator == "type" and not e.relative_path
                              for e in b)]
        tag = (err.schema.get("discriminator") or {}).get("propertyName") \
            if isinstance(err.schema, dict) else None
        if tag and len(fitting) > 1:
            fitting = [b for b in fitting
                       if not any(list(e.relative_path) == [tag] for e in b)]
        if len(fitting) == 1:
            return [leaf for e in fitting[0] for leaf in _leaves(e)]
    return [err]


def errors(name, obj):
    """Every violation of schema `name` by `obj`, as "json.path: reason"."""
    if name not in DEFS:
        raise KeyError(f"no schema {name!r}; have {sorted(DEFS)}")
    if name not in _validators:
        root = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                "$defs": DEFS, "$ref": f"#/$defs/{name}"}
        _validators[name] = Draft202012Validator(root)
    found = []
    for err in _validators[name].iter_errors(obj):
        for leaf in _leaves(err):
            msg = leaf.message if len(leaf.message) < 200 else leaf.message[:197] + "..."
            found.append(f"{leaf.json_path}: {msg}")
    return sorted(set(found))


def validate(name, obj):
    """Raise AssertionError (path + reason per violation) unless obj fits."""
    found = errors(name, obj)
    if found:
        raise AssertionError(f"{name}: {len(found)} violation(s)\n  "
                             + "\n  ".join(found))
