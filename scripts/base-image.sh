#!/usr/bin/env bash
# Make the container image's base images locally, from Debian's packages, for
# machines that cannot pull from a registry (CI, air-gapped hosts):
#
#   scripts/base-image.sh              # runtime base: ragmesh-base/debian:bookworm-slim
#   scripts/base-image.sh --builder    # also a Rust builder base for the full
#                                      # multi-stage build:
#                                      # ragmesh-base/rust:<rustc version>-bookworm
#
# The runtime base is the equivalent of the public debian:bookworm-slim:
# `debootstrap --variant=minbase bookworm`, brought up to date from
# bookworm-updates and bookworm-security, then slimmed as that image is
# (no docs, man pages, locales, apt lists or caches; dpkg told to keep
# skipping them) and imported with `docker import`.
#
# The builder base adds build-essential, pkg-config, ca-certificates and
# libopenblas-pthread-dev (scripts/system-deps.sh) and this host's Rust
# toolchain (the `rustc --print sysroot` of the toolchain that builds here),
# laid out as the public rust:*-bookworm images are: CARGO_HOME=/usr/local/cargo
# on PATH, so the Dockerfile's build stage runs unchanged on either.
#
# Idempotent: each image carries the label org.ragmesh.base.recipe, a hash of
# this script (and, for the builder, of the toolchain version); an image with
# the tag and the same label is left alone, so a second run takes about a
# second. FORCE=1 rebuilds.
#
# Environment:
#   MIRROR           Debian archive URL (default: this host's apt sources)
#   SECURITY_MIRROR  Debian security archive URL (default: this host's apt
#                    sources; none found: no security updates are applied)
#   RAGMESH_BASE_IMAGE     runtime base tag (default ragmesh-base/debian:bookworm-slim)
#   RAGMESH_BUILDER_IMAGE  builder tag (default ragmesh-base/rust:<rustc version>-bookworm)
#   WORK_DIR         scratch space for the root filesystems (default /var/tmp)
#   FORCE=1          rebuild even when the image is up to date
#
# Needs root (debootstrap and chroot) and a Debian/Ubuntu host with apt;
# debootstrap is installed if missing. Prints the tag(s) it made, one a line,
# on stdout; progress goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
suite=bookworm
base_tag="${RAGMESH_BASE_IMAGE:-ragmesh-base/debian:bookworm-slim}"
want_builder=0
for a in "$@"; do
  case "$a" in
    --builder) want_builder=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "base-image: unknown argument $a (try --help)" >&2; exit 2 ;;
  esac
done

log() { echo "base-image: $*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot): run it with sudo"
command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon (docker info failed)"

recipe="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"
label_key=org.ragmesh.base.recipe

image_recipe() { # tag -> the recipe label of the image, or nothing
  docker image inspect --format "{{ index .Config.Labels \"$label_key\" }}" "$1" 2>/dev/null || true
}

builder_tag=""
builder_recipe=""
toolchain=""
if [ "$want_builder" = 1 ]; then
  command -v rustc >/dev/null || die "--builder copies this host's Rust toolchain, but rustc is not on PATH"
  toolchain="$(rustc --print sysroot)"
  rust_version="$(rustc --version | awk '{print $2}')"
  [ -x "$toolchain/bin/cargo" ] || die "no cargo beside rustc in $toolchain"
  builder_tag="${RAGMESH_BUILDER_IMAGE:-ragmesh-base/rust:${rust_version}-bookworm}"
  builder_recipe="$recipe-rust-$rust_version"
fi

need_base=1
need_builder=0
if [ "${FORCE:-0}" != 1 ] && [ "$(image_recipe "$base_tag")" = "$recipe" ]; then
  need_base=0
fi
if [ "$want_builder" = 1 ]; then
  need_builder=1
  if [ "${FORCE:-0}" != 1 ] && [ "$(image_recipe "$builder_tag")" = "$builder_recipe" ]; then
    need_builder=0
  fi
fi
if [ "$need_base" = 0 ] && [ "$need_builder" = 0 ]; then
  log "up to date: $base_tag${builder_tag:+ and $builder_tag} (recipe $recipe)"
  echo "$base_tag"
  [ -n "$builder_tag" ] && echo "$builder_tag"
  exit 0
fi

# --- the Debian archive, from MIRROR or this host's apt sources -------------
# deb822 (*.sources) stanzas and one-line sources.list entries are both read;
# the first URI serving the suite (resp. <suite>-security) wins.
host_uri() { # suite -> URI
  local want="$1" f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v want="$want" '
      function flush() { if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " want " ") && uris != "") { split(uris, u, " "); print u[1]; found = 1; exit } types = suites = uris = "" }
      /^[[:space:]]*#/ { next }
      /^[[:space:]]*$/ { flush(); next }
      /^Types:/  { sub(/^Types:[[:space:]]*/, "");  types = $0 }
      /^URIs:/   { sub(/^URIs:[[:space:]]*/, "");   uris = $0 }
      /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); suites = $0 }
      END { if (!found) flush() }' "$f" | head -n1 | grep . && return 0
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v want="$want" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ } if ($(i+1) == want) { print $i; exit } }' "$f" \
      | head -n1 | grep . && return 0
  done
  return 1
}
mirror="${MIRROR:-$(host_uri "$suite" || true)}"
[ -n "$mirror" ] || die "no Debian mirror for $suite in this host's apt sources: set MIRROR=<Debian archive URL>"
security="${SECURITY_MIRROR:-$(host_uri "$suite-security" || true)}"
log "archive $mirror${security:+, security $security}"

if ! command -v debootstrap >/dev/null; then
  log "installing debootstrap"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q debootstrap >/dev/null 2>&1 || { apt-get update -q >/dev/null; apt-get install -y -q debootstrap >/dev/null; }
fi

work="$(mktemp -d "${WORK_DIR:-/var/tmp}/ragmesh-base.XXXXXX")"
mounted=()
cleanup() {
  local m
  for m in "${mounted[@]}"; do umount -l "$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

in_root() { # rootfs, command... : run in a chroot with /proc and /dev mounted
  local root="$1"; shift
  mount -t proc proc "$root/proc"; mounted+=("$root/proc")
  mount --bind /dev "$root/dev"; mounted+=("$root/dev")
  local rc=0
  chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive HOME=/root LANG=C.UTF-8 "$@" \
    >> "$work/chroot.log" 2>&1 || rc=$?
  umount "$root/dev" "$root/proc"
  mounted=()
  [ "$rc" = 0 ] || { tail -n 20 "$work/chroot.log" >&2; log "failed in the chroot: $* (log above)"; }
  return "$rc"
}

slim() { # rootfs: what debian:*-slim leaves out, and dpkg told to keep leaving it out
  local root="$1"
  mkdir -p "$root/etc/dpkg/dpkg.cfg.d" "$root/etc/apt/apt.conf.d"
  cat > "$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
# as debian:*-slim: no docs, man pages, info pages or translations
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
EOF
  cat > "$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  cat > "$root/etc/apt/apt.conf.d/docker-no-languages" <<'EOF'
Acquire::Languages "none";
EOF
  cat > "$root/etc/apt/apt.conf.d/docker-autoremove-suggests" <<'EOF'
Apt::AutoRemove::SuggestsImportant "false";
EOF
  find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
  rm -rf "$root"/usr/share/{man,groff,info,lintian,linda}/* "$root"/usr/share/locale/*
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
         "$root"/var/lib/dpkg/*-old "$root"/var/log/* "$root"/tmp/* "$root"/var/tmp/* "$root"/root/.cache
  : > "$root/etc/machine-id"
  rm -f "$root/etc/hostname" "$root/etc/resolv.conf"
}

docker_import() { # rootfs, tag, recipe, CMD json
  local root="$1" tag="$2" rec="$3" cmd="$4" env_path="${5:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}"
  shift 5 || true
  local old_id
  old_id="$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)"
  tar --numeric-owner --xattrs -C "$root" -c . \
    | docker import \
        --change "LABEL $label_key=$rec" \
        --change "ENV PATH=$env_path" \
        "$@" \
        --change "CMD $cmd" \
        - "$tag" >/dev/null
  # the image the tag named before, now untagged: removed (unless something uses it)
  if [ -n "$old_id" ] && [ "$(docker image inspect --format '{{len .RepoTags}}' "$old_id" 2>/dev/null)" = 0 ]; then
    docker image rm "$old_id" >/dev/null 2>&1 || true
  fi
}

# --- the root filesystem -----------------------------------------------------
t0=$SECONDS
root="$work/rootfs"
log "debootstrap --variant=minbase $suite (about a minute)"
debootstrap --variant=minbase --components=main "$suite" "$root" "$mirror" > "$work/debootstrap.log" 2>&1 \
  || { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
{
  echo "Types: deb"
  echo "URIs: $mirror"
  echo "Suites: $suite $suite-updates"
  echo "Components: main"
  echo "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
  if [ -n "$security" ]; then
    echo
    echo "Types: deb"
    echo "URIs: $security"
    echo "Suites: $suite-security"
    echo "Components: main"
    echo "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
  fi
} > "$root/etc/apt/sources.list.d/debian.sources"
rm -f "$root/etc/apt/sources.list"
slim "$root"   # dpkg excludes first, so the upgrade below unpacks no docs either
cp /etc/resolv.conf "$root/etc/resolv.conf"   # for apt in the chroot; slim removes it again
log "applying $suite-updates and $suite-security"
in_root "$root" sh -c 'apt-get update -q && apt-get -y -q -o Dpkg::Options::=--force-confold dist-upgrade'

if [ "$need_builder" = 1 ]; then
  broot="$work/builder"
  cp -a "$root" "$broot"
fi

if [ "$need_base" = 1 ]; then
  slim "$root"
  docker_import "$root" "$base_tag" "$recipe" '["bash"]' ""
  log "made $base_tag in $((SECONDS - t0)) s: $(docker image inspect --format '{{.Size}}' "$base_tag" | awk '{printf "%.1f MB", $1/1e6}')"
fi

if [ "$need_builder" = 1 ]; then
  t1=$SECONDS
  log "builder: build-essential pkg-config ca-certificates libopenblas-pthread-dev"
  in_root "$broot" apt-get install -y -q --no-install-recommends build-essential pkg-config ca-certificates libopenblas-pthread-dev git
  log "builder: copying the Rust toolchain $toolchain ($rust_version)"
  mkdir -p "$broot/usr/local/rust" "$broot/usr/local/cargo/bin"
  # docs and the standard library's sources are not needed to build
  tar -C "$toolchain" --exclude=./share/doc --exclude=./lib/rustlib/src -c . | tar -C "$broot/usr/local/rust" -x
  for b in "$broot"/usr/local/rust/bin/*; do ln -s "../../rust/bin/$(basename "$b")" "$broot/usr/local/cargo/bin/$(basename "$b")"; done
  slim "$broot"
  docker_import "$broot" "$builder_tag" "$builder_recipe" '["bash"]' \
    "/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV CARGO_HOME=/usr/local/cargo" --change "ENV RUST_VERSION=$rust_version"
  log "made $builder_tag in $((SECONDS - t1)) s: $(docker image inspect --format '{{.Size}}' "$builder_tag" | awk '{printf "%.1f MB", $1/1e6}')"
fi

echo "$base_tag"
[ -n "$builder_tag" ] && echo "$builder_tag"
exit 0
