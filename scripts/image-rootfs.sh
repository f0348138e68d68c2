#!/usr/bin/env bash
# Complete a container root file system around the ragmesh bundle, for the
# image's last stage (`FROM scratch`, then one COPY of it): the runtime is
# the binary, its libraries and a handful of files, with no shell, package
# manager or coreutils (a distroless layout, made from the runtime base).
#
#   scripts/image-rootfs.sh <rootfs>
#
# Runs inside the Dockerfile's Debian stage (the RUNTIME_IMAGE build
# argument, debian:bookworm-slim by default), where <rootfs> already holds
# what scripts/image-bundle.sh laid out. It adds, from that stage:
#   - glibc: the loader and each glibc library the binary loads, as ldd
#     resolves them there (glibc 2.34+ has the files/dns name services in
#     libc.so.6, so host names resolve without NSS modules);
#   - /etc/passwd and /etc/group with root and ragmesh (uid/gid 10001), so
#     the numeric USER has a name; /etc/nsswitch.conf from the base;
#   - /tmp (1777), /models (a mount point), /data (owned by 10001);
# then starts every role in a chroot of <rootfs> (`--help`), so a library
# left out fails the build here, not a pod later.
set -euo pipefail
umask 022

[ $# -eq 1 ] || { echo "usage: $0 <rootfs>" >&2; exit 2; }
root="$1"
bin="$root/usr/local/bin/ragmesh-gateway"
die() { echo "image-rootfs: $*" >&2; exit 1; }
[ -x "$bin" ] || die "$bin is missing: run scripts/image-bundle.sh into $root first"

# ldd lists the bundle's own libraries (found through LD_LIBRARY_PATH) and
# glibc's; only the ones outside the bundle are copied, at the path the
# loader looks them up by.
ldd_out="$(LD_LIBRARY_PATH="$root/usr/local/lib/ragmesh" ldd "$bin")" || die "ldd $bin failed: $ldd_out"
copy() { mkdir -p "$root$(dirname "$1")" && cp -L "$1" "$root$1"; }
while read -r first second third _; do
  case "$first" in linux-vdso.so.*) continue ;; esac
  if [ "$second" = "=>" ]; then
    [ "$third" = "not" ] && die "the binary needs $first, which this base lacks"
    case "$third" in "$root"/*) continue ;; esac   # bundled
    copy "$third"
  elif [ "${first#/}" != "$first" ]; then
    copy "$first"                                  # the loader, by its absolute path
  fi
done <<< "$ldd_out"

mkdir -p "$root/etc" "$root/tmp" "$root/models" "$root/data"
chmod 1777 "$root/tmp"
chown 10001:10001 "$root/data"
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nragmesh:x:10001:10001:ragmesh:/nonexistent:/usr/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nragmesh:x:10001:\n' > "$root/etc/group"
if [ -f /etc/nsswitch.conf ]; then cp /etc/nsswitch.conf "$root/etc/"; fi

for b in gateway embedder retriever llm-runner; do
  LD_LIBRARY_PATH=/usr/local/lib/ragmesh chroot "$root" "/usr/local/bin/ragmesh-$b" --help >/dev/null \
    || die "ragmesh-$b does not start in $root"
done
echo "image-rootfs: $root: $(du -sh "$root" | cut -f1)" >&2
