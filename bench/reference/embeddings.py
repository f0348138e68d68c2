#!/usr/bin/env python3
"""Reference embeddings from sentence-transformers (PyTorch, CPU).

Writes tests/fixtures/embeddings-all-MiniLM-L6-v2.json: the sentences and
their normalised embeddings, computed by sentence-transformers on the same
model files the embedder loads. The Rust test compares against it
(cosine >= 0.999 each).

    bench/setup-reference.sh          # once: a venv with torch + sentence-transformers
    /var/tmp/ragmesh-ref-venv/bin/python bench/reference/embeddings.py
"""
import json
import os
import sys

from sentence_transformers import SentenceTransformer

MODEL_DIR = os.path.join(
    os.environ.get("RAGMESH_MODEL_DIR", os.path.expanduser("~/.cache/ragmesh/models")),
    "all-MiniLM-L6-v2",
)
OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures",
                   "embeddings-all-MiniLM-L6-v2.json")

LONG = " ".join(
    f"Paragraph {i}: the retriever stores chunks with dense vectors and BM25 terms, "
    "and the gateway budgets the prompt with the model's own tokenizer."
    for i in range(20)
)  # ~500 tokens: exercises truncation at 256

SENTENCES = [
    "",
    "Hello, world!",
    "a",
    "The quick brown fox jumps over the lazy dog.",
    "Kubernetes schedules pods onto nodes according to resource requests.",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "Qdrant is a vector similarity search engine written in Rust.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "El rápido zorro marrón salta sobre el perro perezoso.",
    "東京は日本の首都です。",
    "Москва — столица России.",
    "🚀 Launch the rocket! 🌕✨",
    "def embed(texts): return model.encode(texts, normalize_embeddings=True)",
    "   leading and trailing whitespace   ",
    "UPPERCASE TEXT SHOULD BE LOWERCASED BY THE TOKENIZER",
    "Numbers like 3.14159, 2,718 and 1e-9 appear in scientific text.",
    "naïve café résumé coöperate",
    "Retrieval-augmented generation grounds answers in documents.",
    "The mitochondria is the powerhouse of the cell.",
    "I love this product; it works exactly as described and arrived early.",
    "Terrible service, never again.",
    LONG,
    "word " * 300,  # exactly at/over the limit with repeated tokens
]


def main() -> int:
    model = SentenceTransformer(MODEL_DIR, device="cpu")
    vecs = model.encode(SENTENCES, normalize_embeddings=True, batch_size=8)
    tok = model.tokenizer
    lengths = [min(len(tok(s)["input_ids"]), model.max_seq_length) for s in SENTENCES]
    data = {
        "model": "all-MiniLM-L6-v2",
        "producer": "sentence-transformers " + __import__("sentence_transformers").__version__,
        "max_seq_length": model.max_seq_length,
        "sentences": SENTENCES,
        "token_counts": lengths,
        "embeddings": [[round(float(x), 7) for x in v] for v in vecs],
    }
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {len(SENTENCES)} reference embeddings to {os.path.normpath(OUT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
