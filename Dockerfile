# syntax=docker/dockerfile:1
# keyward's image: one static-enough binary on a distroless base, run as a numeric
# non-root user. `keyward run` (the operator) and `keyward verifier` are its two uses; the
# Helm chart (charts/keyward) passes the subcommand and flags.
#
# Outbound HTTPS (providers, pool webhooks) trusts the CA roots compiled into the binary
# (reqwest with rustls and webpki-roots), and in a pod the API server's CA comes from the
# service account mount, so the runtime image needs no CA bundle or OpenSSL.
#
# No container engine runs where keyward is built and tested: this file is conventional
# and untested there (see the README).

ARG RUST_VERSION=1.89

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
# .dockerignore lets in only what the build reads; the cache mounts keep downloaded
# crates and compiled dependencies between builds.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin keyward \
    && install -D -m 0755 target/release/keyward /out/keyward

# glibc, libgcc and nothing else; `nonroot` is uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/keyward /usr/local/bin/keyward
USER 65532:65532
# The chart's ports: the operator's /metrics, /healthz, /readyz and the verifier.
EXPOSE 9090 8080
ENTRYPOINT ["/usr/local/bin/keyward"]
CMD ["--help"]
