#!/usr/bin/env python3
"""Summarises benchmark JSON lines (one per run, with "impl") from stdin:
prints each run, then ragmesh's best over the peer's best."""
import json
import sys

rows = [json.loads(line) for line in sys.stdin if line.strip().startswith("{")]
for r in rows:
    print("{:>22}: {:7.1f} sentences/s  p50 {:6.2f} ms  p99 {:6.2f} ms".format(
        r["impl"], r["sentences_per_s"], r["p50_ms"], r["p99_ms"]))
best = {}
for r in rows:
    if r["impl"] not in best or r["sentences_per_s"] > best[r["impl"]]["sentences_per_s"]:
        best[r["impl"]] = r
ours = best.get("ragmesh")
peers = [v for k, v in best.items() if k != "ragmesh"]
if ours and peers:
    p = peers[0]
    print("throughput ratio ragmesh / {}: {:.2f}x (best run of each)".format(
        p["impl"], ours["sentences_per_s"] / p["sentences_per_s"]))
    print("single-request p50 ratio ragmesh / {} (lower is better): {:.2f}x".format(
        p["impl"], ours["p50_ms"] / p["p50_ms"]))
