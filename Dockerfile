# syntax=docker/dockerfile:1
# The `sba` image: one binary for every process of a deployment (`serve`, `worker`,
# `migrate up`, `config check`); deploy/compose.yaml runs each of them from it.
#
#   docker build -t sba .
#   docker run --rm -e SBA_ENV=development -e SBA_SERVER__HOST=0.0.0.0 -p 8080:8080 sba
#
# The internal schema's migrations are compiled into the binary (sba-migration), so nothing
# of migrations/ is copied: `sba migrate up` (or any `sba serve`) applies them. The
# Supabase schema (migrations/supabase/) is applied with Supabase's own tooling.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /build
# Every workspace member must be present for Cargo to read the workspace.
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY migrations migrations
# The registry and target directories are build caches, not image layers: the binary is
# copied out of them.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/build/target,sharing=locked \
    cargo build --release --locked -p sba-delivery --bin sba \
    && install -D -m 0755 target/release/sba /out/sba

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# Outbound TLS (Supabase, JWKS, rediss://, PostgreSQL with sslmode) verifies against the
# system's roots.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# A fixed uid/gid, so volume permissions and `runAsUser` policies can name it.
ARG SBA_UID=10001
RUN groupadd --system --gid "${SBA_UID}" sba \
    && useradd --system --uid "${SBA_UID}" --gid sba --home-dir /var/lib/sba --create-home \
       --shell /usr/sbin/nologin sba
COPY --from=builder /out/sba /usr/local/bin/sba
USER 10001:10001
# Optional configuration files are read from ./config (config/sba.toml,
# config/sba.<env>.toml); development data goes to SBA_DATA_DIR.
WORKDIR /var/lib/sba
# Production unless told otherwise: a missing setting stops the process with exit code 2
# and the list of every problem, instead of quietly running on development defaults.
ENV SBA_ENV=production \
    SBA_DATA_DIR=/var/lib/sba/data
# The public port (PORT). With SBA_SERVER__ADMIN_PORT set, /metrics, /openapi.json and
# /docs move to that second port (deploy/compose.yaml uses 9090); keep it off the internet.
EXPOSE 8080
# Liveness, probed by the binary itself (the image has no curl); `sba healthcheck --ready`
# probes /readyz instead. Override or disable it for `worker` and `migrate` containers,
# which serve no HTTP.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["sba", "healthcheck"]
ENTRYPOINT ["sba"]
CMD ["serve"]
