#!/usr/bin/env bash
# Installs the Python packages the tests drive the services with (the
# official OpenAI SDK; jsonschema for the OpenAPI schema checks) into a
# venv outside the clone. Does nothing when they are already there.
set -euo pipefail
venv="${1:-/var/tmp/ragmesh-test-venv}"
if "$venv/bin/python" -c "import openai, jsonschema" 2>/dev/null; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "openai>=1.50,<3" "jsonschema>=4.18,<5"
"$venv/bin/python" -c "import openai; print('test-deps: openai', openai.__version__, 'in $venv')"
