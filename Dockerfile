# syntax=docker/dockerfile:1
# The Rowcast server image: `docker build -t rowcast .` (or `make image`).
#
# Stage 1 builds the dependencies from the manifests alone (a layer reused until
# Cargo.toml/Cargo.lock change), then the server itself. The build command is the one
# `make build` and CI run; server/tests/it/deploy.rs checks they stay the same.
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src

COPY Cargo.toml Cargo.lock ./
COPY server/Cargo.toml server/Cargo.toml
COPY bench/Cargo.toml bench/Cargo.toml
# Placeholder sources so cargo can build (and this layer can cache) every dependency. The
# bench crate only needs to exist for the workspace to load; the image never builds it.
RUN mkdir -p server/src bench/src migrations \
 && echo 'fn main() {}' > server/src/main.rs \
 && echo 'fn main() {}' > bench/src/main.rs \
 && touch server/src/lib.rs \
 && echo 'fn main() {}' > server/build.rs \
 && cargo build --release --locked --bin rowcast \
 && rm -rf server/src server/build.rs

COPY migrations migrations
COPY server server
# COPY keeps the sources' modification times, which may be older than the placeholders'.
RUN touch server/src/main.rs server/src/lib.rs server/build.rs \
 && cargo build --release --locked --bin rowcast

# Stage 2: a small runtime with only the binary (migrations are embedded in it).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 rowcast \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/rowcast --create-home rowcast
COPY --from=builder /src/target/release/rowcast /usr/local/bin/rowcast

USER 10001:10001
WORKDIR /var/lib/rowcast
ENV ROWCAST_LISTEN=0.0.0.0:8080 \
    ROWCAST_DATA_DIR=/var/lib/rowcast
EXPOSE 8080
# `rowcast healthcheck` GETs /ready on ROWCAST_LISTEN (the image has no curl).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["rowcast", "healthcheck"]
ENTRYPOINT ["rowcast"]
CMD ["serve"]
