# syncd container image. Build from the repository root:
#
#   docker build -t syncd:0.1.0 .
#
# See docs/deploy.md. The runtime needs no writable path: run it with a
# read-only root filesystem, as any non-root user (the default is 10001:10001).

# Exact patch version; bump deliberately (and consider pinning the digest too:
# python:3.11.17-slim-bookworm@sha256:...).
ARG PYTHON_IMAGE=python:3.11.17-slim-bookworm

# ---------------------------------------------------------------------------
# build: install syncd and its pinned dependencies into a self-contained venv
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# Dependencies change less often than the code, but pip resolves both in one
# step; copying only what the build needs keeps the context small.
COPY pyproject.toml constraints.txt README.md ./
COPY syncd ./syncd

# The same install as the README/CI (`pip install -c constraints.txt .`), minus
# the [dev] extra, into a venv that the runtime stage copies whole. pip
# precompiles the bytecode, so the read-only runtime never wants to write any.
RUN python -m venv /opt/syncd \
    && /opt/syncd/bin/pip install --quiet -c constraints.txt . \
    && /opt/syncd/bin/pip check

# ---------------------------------------------------------------------------
# runtime: the slim base image plus that venv, nothing else
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="syncd" \
      org.opencontainers.image.description="Syncs Keycloak groups into LiteLLM proxy teams" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"

# A fixed numeric user, so Kubernetes' runAsNonRoot can verify it without
# looking the name up.
RUN groupadd --system --gid 10001 syncd \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin syncd

COPY --from=build /opt/syncd /opt/syncd

ENV PATH=/opt/syncd/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONFAULTHANDLER=1

USER 10001:10001
WORKDIR /

# /metrics, /healthz and /readyz in daemon mode (server.port).
EXPOSE 9108

# No HEALTHCHECK: the same image also runs `--once` (no HTTP server) as a
# CronJob; Kubernetes uses the chart's probes on /healthz and /readyz instead.
ENTRYPOINT ["syncd"]
CMD ["--config", "/etc/syncd/syncd.yaml"]
