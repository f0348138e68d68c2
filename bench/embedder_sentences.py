#!/usr/bin/env python3
"""Writes the benchmark corpus: N deterministic English sentences of 40-60
tokens (all-MiniLM-L6-v2 tokenizer, special tokens included), one per line.

    python3 bench/embedder_sentences.py OUT [N]
Needs only the `tokenizers` package (the reference venv has it).
"""
import random
import sys
import os

from tokenizers import Tokenizer

WORDS = (
    "the a of to and in is that for it as with was on by be this are from at or an have not which but "
    "model vector query document chunk retrieval gateway cluster service request latency throughput memory "
    "kubernetes pod replica token embedding batch queue search index shard collection tenant prompt answer "
    "citation context window sentence paragraph river mountain city people history science music language "
    "computer network storage engine system people market government research student water energy health"
).split()


def main() -> int:
    out = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
    model_dir = os.path.join(
        os.environ.get("RAGMESH_MODEL_DIR", os.path.expanduser("~/.cache/ragmesh/models")),
        "all-MiniLM-L6-v2",
    )
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_padding()
    rng = random.Random(42)
    lines = []
    while len(lines) < n:
        words = [rng.choice(WORDS) for _ in range(rng.randint(36, 58))]
        s = " ".join(words).capitalize() + "."
        if 40 <= len(tok.encode(s).ids) <= 60:
            lines.append(s)
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
