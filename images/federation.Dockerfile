# syntax=docker/dockerfile:1.7
# esi-federation: the central federation service. One image for both serving modes:
#   - Kubernetes: `args: ["serve", ...]` (deploy/federation, modules/federation-kubernetes);
#   - AWS Lambda (container image or zip): started without arguments with
#     AWS_LAMBDA_RUNTIME_API set, the binary serves the same router through lambda_http.
# The `lambda-zip` stage exports `esi-federation-lambda.zip` holding `bootstrap` (the same
# binary) for provided.al2023; see images/README.md.
#
# Build from the repository root (context = repo root):
#   docker buildx build -f images/federation.Dockerfile -t esi-federation:dev .
#   docker buildx build -f images/federation.Dockerfile --target lambda-zip --output type=local,dest=dist .

# Debian bookworm: glibc 2.36 headers, and the binaries need at most GLIBC_2.34 symbols, the
# version of Amazon Linux 2023 (provided.al2023). scripts/checks/images.sh verifies that bound
# on the binaries built on this (bookworm) machine.
ARG RUST_IMAGE=docker.io/library/rust:1.95.0-bookworm

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target/ between builds; the binary is copied out of the
# cached target/ in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release -p esi-federation --locked \
    && install -D -m 0755 target/release/esi-federation /out/esi-federation

FROM ${RUST_IMAGE} AS lambda-package
RUN apt-get update \
    && apt-get install -y --no-install-recommends zip=3.0-13 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /pkg
COPY --from=build /out/esi-federation /pkg/bootstrap
# -X: no extra file attributes; the zip holds only `bootstrap`, executable.
RUN zip -X -j /out.zip bootstrap

# `--target lambda-zip --output type=local,dest=dist` writes dist/esi-federation-lambda.zip.
FROM scratch AS lambda-zip
COPY --from=lambda-package /out.zip /esi-federation-lambda.zip

# Runtime: distroless glibc + libgcc, no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /out/esi-federation /usr/local/bin/esi-federation
# Configuration: a mounted folder (ESI_CONFIG) or the CRDs; in Lambda, the /opt/esi layer.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/esi-federation"]
