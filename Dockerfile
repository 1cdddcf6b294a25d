# SPDX-License-Identifier: Apache-2.0
# The vmwatch operator image: build the abi3 wheel with maturin, install it into a slim Python runtime
# that runs as a non-root user. Build from the repository root:
#   docker build -t vmwatch:latest .
# deploy/base/deployment.yaml runs it with `args: [run]`, a read-only root filesystem and runAsUser 10001.

# ---- builder: Rust + maturin -> one manylinux abi3 wheel in /wheels ----------------------------------
FROM rust:1.95-slim-bookworm AS builder

# bookworm's python3 is 3.11: the interpreter maturin builds the abi3-py311 extension against
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

ENV PATH=/opt/maturin/bin:$PATH
RUN python3 -m venv /opt/maturin && pip install --no-cache-dir maturin==1.16.0

WORKDIR /src
# only what the wheel is built from (.dockerignore keeps local builds and caches out)
COPY Cargo.toml Cargo.lock pyproject.toml README.md ./
COPY rust/ rust/
COPY benches/decode.rs benches/decode.rs
COPY python/ python/
RUN maturin build --release --locked --interpreter python3 --out /wheels

# ---- runtime: Python 3.11 slim, non-root -----------------------------------------------------------------
FROM python:3.11-slim AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY --from=builder /wheels/ /tmp/wheels/
RUN pip install --no-cache-dir /tmp/wheels/vmwatch-*.whl \
    && rm -rf /tmp/wheels \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin vmwatch

USER 10001:10001
# /healthz, /readyz and /metrics (--health-addr, default :8081)
EXPOSE 8081
ENTRYPOINT ["vmwatch"]
CMD ["run"]
