# chatguard: multi-stage build, small runtime image, non-root user.
# Not built here (no Docker engine on the development machines); see README.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
COPY config config
COPY benches benches
RUN cargo build --release --locked --bin chatguard

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/chatguard --create-home chatguard
COPY --from=build /src/target/release/chatguard /usr/local/bin/chatguard
COPY rules /etc/chatguard/rules
ENV CHATGUARD_LISTEN=0.0.0.0:8080 \
    CHATGUARD_RULES=/etc/chatguard/rules \
    CHATGUARD_DATABASE_URL=sqlite:/var/lib/chatguard/chatguard.db \
    CHATGUARD_TELEMETRY__LOG_FORMAT=json
USER chatguard
WORKDIR /var/lib/chatguard
VOLUME /var/lib/chatguard
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["chatguard"]
CMD ["serve"]
