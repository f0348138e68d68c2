# ragmesh container image: the four services (ragmesh-gateway, -embedder,
# -retriever, -llm-runner) as one multi-call binary (ragmesh-gateway) and
# three links to it (gateway/src/main.rs), on a distroless root file system
# made from a slim Debian runtime: glibc, the binary's other libraries, CA
# roots, passwd/group, nothing else (no shell, no package manager;
# scripts/image-rootfs.sh). One image serves every role; the command picks
# it (default: ragmesh-gateway):
#
#   docker run ragmesh:dev ragmesh-embedder
#
# Two ways to build it (docs/kubernetes.md, "The image"):
#
#   from source, on the public base images:
#     docker build -t ragmesh .
#   from binaries already built (the tests and CI: no second build), on the
#   local base image scripts/base-image.sh makes where nothing can be pulled:
#     scripts/image.sh [--bin-dir DIR] [--tag TAG]
#     (= scripts/image-bundle.sh DIR .image/ctx/bundle + docker build --target runtime-prebuilt)
#
# The stage order matters to the classic builder (no BuildKit), which builds
# every stage up to --target in file order: the runtime's configuration
# (`runtime-config`, the base of both final stages) and the cheap
# prebuilt-binaries runtime come first, so `--target runtime-prebuilt`
# compiles nothing; the
# last (default) stage builds from source. BuildKit builds only the stages
# the target needs, whatever the order. Nothing here needs BuildKit.
#
# Build arguments:
#   RUNTIME_IMAGE  the Debian the runtime files come from (bookworm slim;
#                  glibc 2.36); the image itself is FROM scratch
#   BUILDER_IMAGE  Rust toolchain image for the source build (Debian bookworm)
#   BIN_DIR        runtime-prebuilt only: the output of scripts/image-bundle.sh,
#                  a path inside the build context
#   MODELS_DIR     a models folder inside the build context to bake into
#                  /models, for air-gapped clusters (default: none; /models is
#                  a mount point for a volume)
#   CARGO_PROFILE  source build only: the cargo profile (default release, the
#                  serving profile; quickstart builds faster, Cargo.toml)
#
# At run time: uid/gid 10001, no shell at all, read-only root filesystem
# (the models are read from /models, the retriever writes only to /data), no
# HEALTHCHECK (Kubernetes probes /health and the readiness endpoint). No
# tini: each binary is a fine PID 1, it handles SIGTERM and SIGINT itself
# (tokio signal handlers: stop accepting, drain, exit 0) and spawns no child
# processes that would need reaping.

ARG RUNTIME_IMAGE=debian:bookworm-slim
ARG BUILDER_IMAGE=rust:1.95-bookworm

# --- what both final stages are, but for their files ----------------------------
FROM scratch AS runtime-config
ENV RAGMESH_HOST=0.0.0.0 \
    RAGMESH_MODEL_DIR=/models \
    RAGMESH_DATA_DIR=/data \
    LD_LIBRARY_PATH=/usr/local/lib/ragmesh
VOLUME ["/data"]
USER 10001:10001
# gateway 8080; embedder 8081 / 50051; retriever 8082 / 50052; llm-runner 8083 / 50053
EXPOSE 8080 8081 8082 8083 50051 50052 50053
CMD ["ragmesh-gateway"]

# --- runtime from prebuilt binaries ------------------------------------------
FROM ${RUNTIME_IMAGE} AS rootfs-prebuilt
ARG BIN_DIR
ARG MODELS_DIR
COPY scripts/image-rootfs.sh /usr/local/sbin/
# docker/empty is an empty folder (its README is left out of the context):
# the stand-in when an argument is not given, as COPY cannot be conditional.
# (Keep the RUN between the two COPYs: Docker 20.10's classic builder on
# fuse-overlayfs fails with "failed to get layer ...: layer does not exist"
# when a COPY that copies nothing is followed directly by one that copies.)
COPY ${BIN_DIR:-docker/empty}/ /rootfs/
# glibc, passwd/group, /tmp, /data; each role started in a chroot of it
RUN if [ -n "$BIN_DIR" ]; then image-rootfs.sh /rootfs; fi
COPY ${MODELS_DIR:-docker/empty}/ /rootfs/models/

FROM runtime-config AS runtime-prebuilt
COPY --from=rootfs-prebuilt /rootfs/ /

# --- source build --------------------------------------------------------------
FROM ${BUILDER_IMAGE} AS build
WORKDIR /src
# the static thread-safe OpenBLAS (apt); a layer of its own, cached across source changes
COPY scripts/system-deps.sh scripts/
RUN scripts/system-deps.sh && rm -rf /var/lib/apt/lists/*
COPY . .
ARG CARGO_PROFILE=release
ENV CARGO_TARGET_DIR=/src/target
# .cargo/config.toml (in the context) sets the CPU baseline, x86-64-v3
# the gateway binary is all four services (multi-call): nothing else to build
RUN cargo build --locked --profile "$CARGO_PROFILE" -p ragmesh-gateway \
 && out="$CARGO_PROFILE" && { [ "$out" != dev ] || out=debug; } \
 && scripts/image-bundle.sh "target/$out" /bundle
# models to bake travel in the bundle (the context is here already), so the
# default path needs no stand-in folder
ARG MODELS_DIR
RUN if [ -n "$MODELS_DIR" ]; then mkdir -p /bundle/models && cp -a "$MODELS_DIR/." /bundle/models/; fi

FROM ${RUNTIME_IMAGE} AS rootfs
COPY scripts/image-rootfs.sh /usr/local/sbin/
COPY --from=build /bundle/ /rootfs/
RUN image-rootfs.sh /rootfs

# --- runtime (default): built from source --------------------------------------
FROM runtime-config AS runtime
COPY --from=rootfs /rootfs/ /
