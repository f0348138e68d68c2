#!/usr/bin/env bash
# Installs the Python packages the tests drive the services with (the
# official OpenAI SDK; jsonschema for the OpenAPI schema checks; for the Helm
# chart checks: helm-python-sdk (Helm 4's engine as a library, no helm binary),
# kubernetes-validate (offline Kubernetes JSON schemas) and pyyaml) into a
# venv outside the clone; and promtool (`promtool check metrics` on every
# service's /metrics), unpacked from Debian's prometheus package into
# /var/tmp/ragmesh-promtool (not installed: the package would also start a
# Prometheus server). Does nothing when they are already there.
set -euo pipefail
venv="${1:-/var/tmp/ragmesh-test-venv}"
promtool_dir="${RAGMESH_PROMTOOL_DIR:-/var/tmp/ragmesh-promtool}"
if ! command -v promtool >/dev/null && [ ! -x "$promtool_dir/usr/bin/promtool" ]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  ( cd "$work" && { apt-get download prometheus >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get download prometheus >/dev/null; }; } ) \
    || { echo "test-deps: cannot download Debian's prometheus package (for promtool)" >&2; exit 1; }
  mkdir -p "$promtool_dir"
  dpkg-deb -x "$work"/prometheus_*.deb "$promtool_dir"
  "$promtool_dir/usr/bin/promtool" --version 2>&1 | head -n1 | sed 's/^/test-deps: /'
fi
if "$venv/bin/python" -c "import openai, jsonschema, helm_python, kubernetes_validate, yaml" 2>/dev/null; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "openai>=1.50,<3" "jsonschema>=4.18,<5" \
  "helm-python-sdk>=0.2,<0.3" "kubernetes-validate>=1.31,<2" "pyyaml>=6,<7"
"$venv/bin/python" -c "import openai; print('test-deps: openai', openai.__version__, 'in $venv')"
