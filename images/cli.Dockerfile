# syntax=docker/dockerfile:1.7
# esi-cli: the init container / sidecar image the webhook injects into every opted-in Pod, so
# it is pulled on every Pod start and kept as small as possible.
#
# The binary is STATIC (glibc, crt-static): `esi-cli init` copies it into the Pod's volume and
# the app containers run it as `/esi/bin/esi-cli exec -- ...` inside THEIR images (Alpine/musl,
# distroless/static, scratch, ...), where a dynamically linked binary would not start.
# Its path in the image is esi_api::inject::IMAGE_BINARY_PATH (/usr/local/bin/esi-cli), the
# webhook's default `cli.binaryPath`.
#
# Build from the repository root (context = repo root):
#   docker buildx build -f images/cli.Dockerfile -t esi-cli:dev .

ARG RUST_IMAGE=docker.io/library/rust:1.95.0-bookworm

FROM ${RUST_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY . .
# Size over speed for this one binary (it fetches a few credentials per Pod start): one
# codegen unit, fat LTO, opt-level s; the workspace's release profile already strips symbols
# and aborts on panic. `--target <host triple>` keeps crt-static off build scripts and
# proc-macros (they must stay dynamic).
ENV CARGO_PROFILE_RELEASE_OPT_LEVEL=s \
    CARGO_PROFILE_RELEASE_LTO=fat \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    target="$(rustc -vV | sed -n 's/^host: //p')" \
    && RUSTFLAGS="-C target-feature=+crt-static" \
       cargo build --release -p esi-cli --locked --target "$target" \
    && install -D -m 0755 "target/$target/release/esi-cli" /out/esi-cli \
    && if readelf -d /out/esi-cli | grep -q NEEDED || readelf -lW /out/esi-cli | grep -q interpreter; then \
         echo "esi-cli is not static" >&2; exit 1; \
       fi

# Runtime: distroless static (CA certificates for the federation's TLS, /etc/passwd with
# nonroot, tzdata; no libc, no shell), about 2 MB under the binary.
FROM gcr.io/distroless/static-debian12:nonroot AS runtime
COPY --from=build /out/esi-cli /usr/local/bin/esi-cli
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/esi-cli"]
