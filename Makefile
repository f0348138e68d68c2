# ragmesh — the two commands:
#   make run    build, fetch the models if missing, start the all-in-one gateway
#               on 127.0.0.1:8080 with docs/ + README ingested (profile ragmesh-docs)
#   make test   fetch what the tests need if missing, run the whole suite
#
# Caches live outside the clone so a fresh clone (and CI) reuses them:
#   CARGO_TARGET_DIR  build cache       (default /var/tmp/ragmesh-target)
#   RAGMESH_MODEL_DIR model cache       (default ~/.cache/ragmesh/models)
#   TEST_VENV         Python test tools (default /var/tmp/ragmesh-test-venv)

SHELL := /bin/bash
export CARGO_TARGET_DIR ?= /var/tmp/ragmesh-target
export RAGMESH_MODEL_DIR ?= $(HOME)/.cache/ragmesh/models
TEST_VENV ?= /var/tmp/ragmesh-test-venv
export RAGMESH_TEST_PYTHON := $(TEST_VENV)/bin/python
CARGO ?= cargo

.PHONY: run test models system-deps test-deps build lint bench-embedder bench-retriever bench-runner bench-prefix bench-structured bench-routing bench-gateway bench-rag-quality bench-ingest bench-overhead fmt

# The quickstart profile builds in about half the time of release, with
# Qdrant Edge unoptimised (Cargo.toml says what that costs).
run: system-deps models
	$(CARGO) build --profile quickstart -p ragmesh-gateway
	exec $(CARGO_TARGET_DIR)/quickstart/ragmesh-gateway --demo-ingest docs,README.md

models:
	@scripts/fetch-models.sh

# Build-time system packages (the serial OpenBLAS the embedder links).
system-deps:
	@scripts/system-deps.sh

# The official OpenAI Python SDK drives the HTTP transports in the tests.
test-deps:
	@scripts/test-deps.sh "$(TEST_VENV)"

build: system-deps
	$(CARGO) build --workspace --bins

test: models test-deps build
	$(CARGO) test --workspace --no-fail-fast

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench-embedder: system-deps models
	bench/embedder.sh

bench-retriever:
	bench/retriever.sh

# builds llama.cpp (llama-cpp-python) into a venv on first use
bench-runner: system-deps models
	bench/llm_runner.sh

# the runner's prefix cache off vs on (multi-turn chats)
bench-prefix: system-deps models
	bench/prefix_cache.sh

# JSON-Schema-constrained decoding vs free decoding (1 and 16 streams)
bench-structured: system-deps models
	bench/structured.sh

# two runner replicas: least-outstanding vs prefix routing
bench-routing: system-deps models
	bench/routing.sh

# end-to-end RAG through the all-in-one gateway vs the plain model
bench-gateway: system-deps models build
	bench/gateway_rag.sh

# RAG answer quality on an invented corpus (release build): retrieval hit@k,
# fact in answer, citations, degenerate loops. Flags: RAG_QUALITY_ARGS="--out q.json"
bench-rag-quality: system-deps models
	bench/rag_quality.sh $(RAG_QUALITY_ARGS)

# Ingest throughput vs the embedding ceiling, and RSS under ~7 MB chat bodies
# (release build). Flags: INGEST_ARGS="--out i.json --kb 1024"
bench-ingest: system-deps models
	bench/ingest.sh $(INGEST_ARGS)

# Gateway overhead vs a zero-work upstream (release build, oha)
bench-overhead:
	bench/gateway_overhead.sh
