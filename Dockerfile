# SPDX-License-Identifier: Apache-2.0
# The vmwatch operator image: build the abi3 wheel with maturin, install it into a slim Python runtime
# that runs as a non-root user. Build from the repository root (give the image a version tag; the
# overlays replace it, never `latest`):
#   docker build -t vmwatch:0.1.0 .
# deploy/base/deployment.yaml runs it with `args: [run]`, a read-only root filesystem and runAsUser 10001.
#
# Reproducible inputs: both base images are pinned by the digest of their multi-platform index (the tag
# says what it is, the digest what is pulled, amd64 and arm64 alike); maturin, zig and every runtime
# dependency come from hash-pinned locks (requirements/*.lock, `make lock`); cargo builds with --locked.
# The wheel is the one `make wheels` builds for the build's architecture (abi3, manylinux_2_28).
# Where the digests come from: python:3.11-slim-bookworm (Python 3.11.16, built 2026-08-25) as the official
# images' repo-info record publishes it; rust:1.95-slim-bookworm (Rust 1.95.0, built 2026-05-08) from a
# copy of that record (the official one drops a tag's page once the tag retires), the same digest other
# public Dockerfiles pin. To move on: `docker buildx imagetools inspect IMAGE:TAG`, replace, rebuild.

# ---- builder: Rust + maturin + zig -> the abi3 manylinux_2_28 wheel in /wheels, as `make wheels` builds it
FROM rust:1.95-slim-bookworm@sha256:b8ecdb97c5b9c1ae058249f72710dbe33d4da19f7b8d911bd3c72e5f048af251 AS builder

# bookworm's python3 is 3.11: the interpreter maturin builds the abi3-py311 extension against. apt takes
# bookworm's current patch release (not pinned); with abi3 it does not reach the wheel.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

ENV PATH=/opt/maturin/bin:$PATH
COPY requirements/build.lock /tmp/build.lock
RUN python3 -m venv /opt/maturin \
    && pip install --no-cache-dir --require-hashes --no-deps -r /tmp/build.lock

WORKDIR /src
# only what the wheel is built from (.dockerignore keeps local builds and caches out)
COPY Cargo.toml Cargo.lock pyproject.toml README.md ./
COPY rust/ rust/
COPY benches/decode.rs benches/decode.rs
COPY python/ python/
RUN maturin build --release --locked --zig --compatibility manylinux_2_28 --interpreter python3 --out /wheels

# ---- runtime: Python 3.11 slim (bookworm, as the builder), non-root -----------------------------------
FROM python:3.11-slim-bookworm@sha256:0bee7276f83efd4a1ee05bbbf4281d95ed28e079220a9457f25a93e3f1e3c31b AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# the dependencies exactly as locked (every file's hash checked, nothing resolved here), then the wheel
# alone; `pip check` fails the build if the lock no longer covers what the wheel requires
COPY requirements/runtime.lock /tmp/runtime.lock
COPY --from=builder /wheels/ /tmp/wheels/
RUN pip install --no-cache-dir --require-hashes --no-deps -r /tmp/runtime.lock \
    && pip install --no-cache-dir --no-deps /tmp/wheels/vmwatch-*.whl \
    && pip check \
    && rm -rf /tmp/wheels /tmp/runtime.lock \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin vmwatch

USER 10001:10001
# /healthz and /readyz (--health-probe-bind-address, default :8081); /metrics (--metrics-bind-address, default :8080)
EXPOSE 8080 8081
ENTRYPOINT ["vmwatch"]
CMD ["run"]
