# syntax=docker/dockerfile:1
# faasight: one program for serverless traces, cold starts and cost.
#
#   docker build -t faasight .
#   docker run -p 4317:4317 -p 4318:4318 -p 8080:8080 -p 5433:5433 -v faasight-data:/var/lib/faasight faasight
#
# The build stage runs the same cargo command CI runs for the release
# binary (`cargo build --release --locked --bin faasight`). The image is not
# built in CI here (no Docker engine on the CI machines); CI lints this file
# with hadolint.

FROM rust:1.95-slim-trixie AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin faasight \
    && install -m 0755 target/release/faasight /usr/local/bin/faasight

FROM debian:trixie-slim
# ca-certificates: Slack and AWS over TLS; curl: the health check.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/faasight --create-home faasight
COPY --from=build /usr/local/bin/faasight /usr/local/bin/faasight
COPY rules /etc/faasight/rules
ENV FAASIGHT_DATA_DIR=/var/lib/faasight/data \
    FAASIGHT_RULES_DIR=/etc/faasight/rules \
    FAASIGHT_OTLP_GRPC_ADDR=0.0.0.0:4317 \
    FAASIGHT_OTLP_HTTP_ADDR=0.0.0.0:4318 \
    FAASIGHT_API_ADDR=0.0.0.0:8080 \
    FAASIGHT_PG_ADDR=0.0.0.0:5433
USER faasight
WORKDIR /var/lib/faasight
VOLUME ["/var/lib/faasight"]
EXPOSE 4317 4318 8080 5433
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["faasight"]
CMD ["serve"]
