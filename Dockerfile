# syntax=docker/dockerfile:1
# The ringfence binary, built static (musl) and run on distroless as non-root.
#   docker build -t ringfence .

FROM rust:1.95 AS build
ARG TARGET=x86_64-unknown-linux-musl
# musl-gcc compiles ring's C and assembly for the static target.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "$TARGET"
WORKDIR /src
COPY . .
# Cache mounts keep the registry and dependency builds between image builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target "$TARGET" --bin ringfence \
 && cp "target/$TARGET/release/ringfence" /ringfence

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="ringfence" \
      org.opencontainers.image.description="Staged configuration rollouts for Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /ringfence /usr/local/bin/ringfence
# distroless' nonroot user; the chart's securityContext runs as the same UID.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/ringfence"]
CMD ["controller"]
