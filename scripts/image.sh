#!/usr/bin/env bash
# Build the ragmesh container image from binaries already built: no cargo
# here, so CI and the container tests reuse what `make test` built.
#
#   scripts/image.sh [--bin-dir DIR] [--tag TAG] [--models DIR] [--runtime-image IMAGE]
#
#   --bin-dir DIR   the binaries (default $CARGO_TARGET_DIR/release, with
#                   CARGO_TARGET_DIR defaulting to /var/tmp/ragmesh-target;
#                   the tests pass .../debug)
#   --tag TAG       the image (default $RAGMESH_IMAGE, else ragmesh:dev)
#   --models DIR    bake this models folder into /models (air-gapped
#                   clusters); default: none, /models is a volume
#   --runtime-image IMAGE
#                   the runtime base (default: the local Debian base that
#                   scripts/base-image.sh makes, as nothing can be pulled
#                   here; debian:bookworm-slim where pulls work)
#
# Steps: scripts/base-image.sh (about a second when the base is up to date),
# scripts/image-bundle.sh DIR .image/ctx/bundle (the binaries,
# debug-stripped, and their non-glibc libraries), then
#   docker build --target runtime-prebuilt --build-arg BIN_DIR=.image/ctx/bundle
# with the classic builder unless DOCKER_BUILDKIT says otherwise (the
# Dockerfile needs no BuildKit feature). Prints the tag on stdout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
bin_dir="${CARGO_TARGET_DIR:-/var/tmp/ragmesh-target}/release"
tag="${RAGMESH_IMAGE:-ragmesh:dev}"
models=""
runtime_image=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --models) models="$2"; shift 2 ;;
    --runtime-image) runtime_image="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "image: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done

log() { echo "image: $*" >&2; }
t0=$SECONDS

if [ -z "$runtime_image" ]; then
  runtime_image="$("$here/base-image.sh" | head -n1)"
fi
t1=$SECONDS

# the bundle (and models to bake) go in the build context for the build's
# length only, so a later source build (`docker build .`) does not send them
# A fixed path keeps the build arguments, hence Docker's layer cache, the
# same from run to run (unchanged binaries: the same image in seconds); a
# lock serialises runs in one checkout.
ctx=.image/ctx
stage="$root/$ctx"
mkdir -p "$root/.image"
exec 9> "$root/.image/lock"
flock 9
rm -rf "$stage"
mkdir -p "$stage"
trap 'rm -rf "$stage"' EXIT
"$here/image-bundle.sh" "$bin_dir" "$stage/bundle"
build_args=(--build-arg "RUNTIME_IMAGE=$runtime_image" --build-arg "BIN_DIR=$ctx/bundle")
if [ -n "$models" ]; then
  [ -d "$models" ] || { log "--models $models is not a folder"; exit 1; }
  # hard links where the folder is on the same file system: no copy of the weights
  cp -al "$models/." "$stage/models" 2>/dev/null || { rm -rf "$stage/models"; cp -a "$models/." "$stage/models"; }
  build_args+=(--build-arg "MODELS_DIR=$ctx/models")
fi
t2=$SECONDS

old_id="$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)"
rev="$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)"
log "docker build --target runtime-prebuilt -t $tag (runtime base $runtime_image)"
DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}" docker build --target runtime-prebuilt \
  "${build_args[@]}" \
  --label "org.opencontainers.image.revision=$rev" \
  -t "$tag" -f "$root/Dockerfile" "$root" >&2
t3=$SECONDS
# the image this tag named before, now untagged: removed (unless a container uses it)
if [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect --format '{{.Id}}' "$tag")" ] \
   && [ "$(docker image inspect --format '{{len .RepoTags}}' "$old_id" 2>/dev/null)" = 0 ]; then
  docker image rm "$old_id" >/dev/null 2>&1 || true
fi

# the root-file-system stage is left behind untagged by every build: its
# images carry the local base's label, and nothing else does
docker image prune -f --filter label=org.ragmesh.base.recipe >/dev/null 2>&1 || true

size="$(docker image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.1f MB", $1/1e6}')"
log "$tag: $size; base $((t1 - t0)) s, bundle $((t2 - t1)) s, docker build $((t3 - t2)) s"
echo "$tag"
