#!/usr/bin/env python3
"""The embedder benchmark's peer: sentence-transformers (PyTorch, CPU) on the
same model files, sentences and thread count. Prints one JSON line like the
Rust side.

    python bench/embedder_peer.py SENTENCES_FILE THREADS
"""
import json
import os
import sys
import time

import torch
from sentence_transformers import SentenceTransformer


def main() -> int:
    path = sys.argv[1]
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    sentences = [l.rstrip("\n") for l in open(path) if l.strip()]
    model_dir = os.path.join(
        os.environ.get("RAGMESH_MODEL_DIR", os.path.expanduser("~/.cache/ragmesh/models")),
        "all-MiniLM-L6-v2",
    )
    model = SentenceTransformer(model_dir, device="cpu")
    model.encode(sentences[:32], batch_size=32, normalize_embeddings=True)  # warm-up

    t = time.perf_counter()
    for i in range(0, len(sentences), 32):
        model.encode(sentences[i:i + 32], batch_size=32, normalize_embeddings=True)
    secs = time.perf_counter() - t

    lat = []
    for s in sentences[:200]:
        t = time.perf_counter()
        model.encode([s], normalize_embeddings=True)
        lat.append((time.perf_counter() - t) * 1e3)
    lat.sort()
    pct = lambda p: lat[int((len(lat) - 1) * p)]
    print(json.dumps({
        "impl": "sentence-transformers",
        "sentences": len(sentences),
        "threads": threads,
        "sentences_per_s": round(len(sentences) / secs, 1),
        "p50_ms": round(pct(0.5), 2),
        "p99_ms": round(pct(0.99), 2),
        "torch": torch.__version__,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
