# syntax=docker/dockerfile:1.7
# esi-webhook: the mutating admission webhook (webhook/, deployed by webhook/deploy or
# infra/terraform/modules/webhook).
#
# Build from the repository root (context = repo root):
#   docker buildx build -f images/webhook.Dockerfile -t esi-webhook:dev .

# Debian bookworm: glibc 2.36 at build time; distroless cc-debian12 ships the same glibc.
ARG RUST_IMAGE=docker.io/library/rust:1.95.0-bookworm

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release -p esi-webhook --locked \
    && install -D -m 0755 target/release/esi-webhook /out/esi-webhook

# Runtime: distroless glibc + libgcc, no shell. The Deployment runs it with a read-only root
# filesystem as 65532; TLS files and the config are mounted.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /out/esi-webhook /usr/local/bin/esi-webhook
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/esi-webhook"]
