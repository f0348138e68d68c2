#!/usr/bin/env bash
# The benchmark peers and fixture producers: PyTorch + sentence-transformers
# in a venv outside the clone (never needed by `make test`).
set -euo pipefail
venv="${REF_VENV:-/var/tmp/ragmesh-ref-venv}"
if "$venv/bin/python" -c "import sentence_transformers, torch" 2>/dev/null; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check torch sentence-transformers tokenizers
