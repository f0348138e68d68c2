#!/usr/bin/env bash
# Lay out the ragmesh binary (all four services) and what it needs at run time as the
# container image's files, for the Dockerfile to copy to / in one step:
#
#   scripts/image-bundle.sh <bin-dir> <out-dir>
#
#   <out-dir>/usr/local/bin/ragmesh-gateway
#       the gateway binary of <bin-dir> (a cargo profile directory:
#       target/release, or target/debug as the tests use), with its debug
#       sections stripped (`strip --strip-debug`: the symbol table stays, so
#       panics and profilers still name functions)
#   <out-dir>/usr/local/bin/ragmesh-{embedder,retriever,llm-runner}
#       links to it: the gateway is a multi-call binary that is the service
#       it is called as (gateway/src/main.rs). It links every stage for the
#       all-in-one mode anyway, so three more binaries would only repeat its
#       code (about 70% of a four-binary image)
#   <out-dir>/usr/local/lib/ragmesh/
#       every shared library they load that is not glibc's own, as ldd
#       resolves it on this machine (the image sets LD_LIBRARY_PATH here)
#   <out-dir>/etc/ssl/certs/ca-certificates.crt
#       this machine's CA roots: `https://` upstreams are verified against
#       them (reqwest with rustls and the native roots)
#   <out-dir>/usr/local/share/ragmesh/bundle.txt
#       what was bundled, from where, and the newest glibc symbol version the
#       binaries need (the runtime base must have that glibc or newer)
#
# Libraries: glibc (libc, libm, libpthread, libdl, librt, libresolv,
# libutil, the loader) comes from the runtime base image and is never
# bundled: it must match the base's loader. Everything else is (today
# libgcc_s and, where a dependency has C++, libstdc++; OpenBLAS is linked
# statically, see blas/build.rs), although debian:bookworm-slim carries
# both: the bundle then runs on any base with a new enough glibc, and a
# library built with the binaries is never swapped for the base's copy.
#
# The Dockerfile's source-build stage runs this same script, so the binaries
# built in the image and the prebuilt ones (scripts/image.sh) give one layout.
# <out-dir> is emptied first. Needs ldd and strip (binutils).
set -euo pipefail
umask 022

[ $# -eq 2 ] || { echo "usage: $0 <bin-dir> <out-dir>" >&2; exit 2; }
bin_dir="$1"
out="$2"
bins=(ragmesh-gateway)
links=(ragmesh-embedder ragmesh-retriever ragmesh-llm-runner)

die() { echo "image-bundle: $*" >&2; exit 1; }
command -v ldd >/dev/null || die "ldd is missing (libc-bin)"
command -v strip >/dev/null || die "strip is missing (binutils)"
for b in "${bins[@]}"; do
  [ -x "$bin_dir/$b" ] || die "$bin_dir/$b is missing: build the binaries first (cargo build --release --workspace --bins)"
done

# glibc's own libraries: provided by the runtime base, never bundled
is_glibc() {
  case "$1" in
    linux-vdso.so.*|ld-linux*.so.*|libc.so.*|libm.so.*|libmvec.so.*|libpthread.so.*|libdl.so.*|librt.so.*|\
    libresolv.so.*|libutil.so.*|libanl.so.*|libnss_*.so.*|libthread_db.so.*|libBrokenLocale.so.*|libc_malloc_debug.so.*)
      return 0 ;;
  esac
  return 1
}

rm -rf "$out"
mkdir -p "$out/usr/local/bin" "$out/usr/local/lib/ragmesh" "$out/usr/local/share/ragmesh" "$out/etc/ssl/certs"
manifest="$out/usr/local/share/ragmesh/bundle.txt"
{
  echo "# ragmesh image bundle"
  echo "# from: $(cd "$bin_dir" && pwd)"
} > "$manifest"

declare -A libs=()
for b in "${bins[@]}"; do
  strip --strip-debug -o "$out/usr/local/bin/$b" "$bin_dir/$b"
  chmod 0755 "$out/usr/local/bin/$b"
  echo "bin $b $(stat -c %s "$bin_dir/$b") -> $(stat -c %s "$out/usr/local/bin/$b") bytes" >> "$manifest"
  ldd_out="$(ldd "$bin_dir/$b")" || die "ldd $bin_dir/$b failed: $ldd_out"
  while read -r name arrow path _; do
    if [ "$arrow" = "=>" ]; then
      [ "$path" = "not" ] && die "$b needs $name, which is not found on this machine"
      is_glibc "$name" || libs["$name"]="$path"
    fi
  done <<< "$ldd_out"
done

for l in "${links[@]}"; do
  ln -s ragmesh-gateway "$out/usr/local/bin/$l"
  echo "link $l -> ragmesh-gateway" >> "$manifest"
done

for name in "${!libs[@]}"; do
  # the file the soname points at, copied under the soname
  cp -L "${libs[$name]}" "$out/usr/local/lib/ragmesh/$name"
  chmod 0644 "$out/usr/local/lib/ragmesh/$name"
  echo "lib $name <- $(readlink -f "${libs[$name]}")" >> "$manifest"
done

glibc_needed="$( { for b in "${bins[@]}"; do objdump -T "$out/usr/local/bin/$b" 2>/dev/null; done; } \
  | grep -o 'GLIBC_[0-9][0-9.]*' | sort -u -V | tail -n1 || true)"
echo "glibc ${glibc_needed:-unknown} or newer (this machine: $(ldd --version | head -n1 | awk '{print $NF}'))" >> "$manifest"

ca="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
if [ -f "$ca" ]; then
  cp -L "$ca" "$out/etc/ssl/certs/ca-certificates.crt"
  chmod 0644 "$out/etc/ssl/certs/ca-certificates.crt"
  echo "ca-certificates <- $ca" >> "$manifest"
else
  echo "image-bundle: warning: no CA bundle at $ca (install ca-certificates): https upstreams will fail to verify" >&2
fi

echo "image-bundle: $out: ${#bins[@]} binary + ${#links[@]} links ($(du -sh "$out/usr/local/bin" | cut -f1)), ${#libs[@]} libraries (${!libs[*]}), glibc ${glibc_needed:-?}+" >&2
