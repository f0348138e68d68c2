#!/usr/bin/env python3
"""Vendor the OpenAI component schemas the gateway's responses are checked against.

Usage: extract-openai-schemas.py PATH/TO/openapi.json COMMIT [OUT]

Reads OpenAI's published OpenAPI document (github openai/openai-openapi) and
writes the root schemas below plus every schema they reference transitively,
copied verbatim, to tests/fixtures/openai-openapi/schemas.json (or OUT).
Standard library only.
"""
import json
import os
import sys

ROOTS = [
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionResponse",
    "CreateEmbeddingResponse",
    "ListModelsResponse",
    "Model",
    "ErrorResponse",
    "DeleteModelResponse",
    # Files API
    "OpenAIFile",
    "ListFilesResponse",
    "DeleteFileResponse",
    # Vector Stores API
    "VectorStoreObject",
    "ListVectorStoresResponse",
    "DeleteVectorStoreResponse",
    "VectorStoreFileObject",
    "ListVectorStoreFilesResponse",
    "DeleteVectorStoreFileResponse",
    "VectorStoreFileBatchObject",
    "VectorStoreSearchResultsPage",
    "VectorStoreFileContentResponse",
    # Responses API
    "Response",
    "ResponseStreamEvent",  # text/event-stream body of POST /responses
    "ResponseItemList",  # GET /responses/{id}/input_items
    # DELETE /responses/{id}: the spec gives no 200 schema (example only:
    # {"id", "object": "response", "deleted": true}), so nothing to vendor.
]
PREFIX = "#/components/schemas/"


def refs(node):
    """Yield every schema name referenced by $ref anywhere inside node."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            if not ref.startswith(PREFIX):
                sys.exit(f"unsupported $ref {ref!r}")
            yield ref[len(PREFIX):]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    spec_path, commit = sys.argv[1], sys.argv[2]
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[3] if len(sys.argv) == 4 else os.path.join(
        here, "..", "tests", "fixtures", "openai-openapi", "schemas.json")
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    available = spec["components"]["schemas"]

    wanted, todo = set(), [r for r in ROOTS if r in available]
    missing = [r for r in ROOTS if r not in available]
    if missing:
        print(f"warning: not in spec: {', '.join(missing)}", file=sys.stderr)
    while todo:
        name = todo.pop()
        if name in wanted:
            continue
        if name not in available:
            sys.exit(f"dangling $ref to {name}")
        wanted.add(name)
        todo.extend(refs(available[name]))

    doc = {
        "source": {
            "repository": "openai/openai-openapi",
            "path": os.path.basename(spec_path),
            "commit": commit,
            "openapi": spec.get("openapi"),
            "info_version": spec["info"]["version"],
            "roots": [r for r in ROOTS if r in available],
            "note": "OpenAI's component schemas (the roots and their transitive "
                    "$ref closure), vendored unmodified as test data. Regenerate "
                    "with scripts/extract-openai-schemas.py.",
        },
        "schemas": {name: available[name] for name in sorted(wanted)},
    }
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {len(wanted)} schemas to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
