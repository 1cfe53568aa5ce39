# syntax=docker/dockerfile:1
# vpbx container image: build with the Rust toolchain, run on a slim Debian as
# a non-root user. See README.md ("Docker") for build and run commands.

# --- build -------------------------------------------------------------------
FROM rust:bookworm AS build
# PGO=1 (default): the profile-guided build, the one benchmarked in
# docs/performance.md: scripts/build-pgo builds an instrumented vpbx, trains it
# with 60,000 SIPp calls on this build's own loopback (random free ports), and
# rebuilds it with the profile (two release builds: about twice the time).
# It needs sipp and the toolchain's llvm-profdata (rustup's llvm-tools).
# BOLT=1: then lays it out again with BOLT from the same training on a
# BOLT-instrumented copy (build-pgo --bolt; installs Debian's bolt-19).
# PGO=0: the plain `cargo build --release` binary (docker build --build-arg PGO=0).
ARG PGO=1
ARG BOLT=0
RUN case "$PGO:$BOLT" in [01]:[01]) ;; *) echo "PGO and BOLT must be 0 or 1, not '$PGO', '$BOLT'" >&2; exit 2 ;; esac \
 && if [ "$PGO" = 1 ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends sip-tester $([ "$BOLT" = 0 ] || echo bolt-19) \
      && rm -rf /var/lib/apt/lists/* \
      && if command -v rustup >/dev/null; then rustup component add llvm-tools; fi; \
    fi
WORKDIR /src
# Only what the release binary needs: the manifest, the sources, the embedded
# default config (include_str!), and benches/ because Cargo.toml declares a
# [[bench]] target that must exist for the manifest to load; for the PGO
# training, scripts/build-pgo and its two SIPp scenarios.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY config ./config
COPY scripts/build-pgo ./scripts/
COPY sipp-scenarios/uac_call.xml sipp-scenarios/uas_answer.xml ./sipp-scenarios/
# BuildKit caches keep the crates registry and the target dir between builds.
# `vpbx --version` says ", profile-guided build" for the PGO binary, and
# ", profile-guided build, BOLT-optimized" with BOLT.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    if [ "$PGO" = 1 ]; then \
      scripts/build-pgo --locked "$([ "$BOLT" = 1 ] && echo --bolt || echo --no-bolt)" \
      && install -m 0755 target/pgo/release/vpbx /usr/local/bin/vpbx; \
    else \
      cargo build --release --locked --bin vpbx \
      && install -m 0755 target/release/vpbx /usr/local/bin/vpbx; \
    fi \
 && /usr/local/bin/vpbx --version

# --- runtime -----------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 vpbx \
 && useradd --system --uid 10001 --gid vpbx --home-dir /var/lib/vpbx \
      --shell /usr/sbin/nologin vpbx \
 && install -d -o vpbx -g vpbx -m 0750 /var/lib/vpbx \
 && install -d -o vpbx -g vpbx -m 0750 /etc/vpbx
COPY --from=build /usr/local/bin/vpbx /usr/local/bin/vpbx
# The demo config as the volume's initial content; mount your own over it.
COPY --chown=vpbx:vpbx config/ /etc/vpbx/

USER vpbx:vpbx
# CDRs (relative [cdr] path) and other state land in the working directory.
WORKDIR /var/lib/vpbx
VOLUME ["/etc/vpbx", "/var/lib/vpbx"]
EXPOSE 5060/udp 5060/tcp
# vpbx handles SIGTERM itself (stop taking calls, drain, flush CDRs): give it
# more than [shutdown] drain_time with `docker stop -t` / `--stop-timeout`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/vpbx", "run", "--config", "/etc/vpbx"]
# The shipped config listens on 127.0.0.1 only; in a container listen on all
# interfaces. Replace CMD (e.g. with no arguments) to use the config's `listen`.
CMD ["--listen", "udp:0.0.0.0:5060", "--listen", "tcp:0.0.0.0:5060"]
