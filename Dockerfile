# syntax=docker/dockerfile:1
#
# The requeue operator image. Build from the repository root:
#
#   docker build -t ghcr.io/requeue-dev/requeue:0.1.0 .
#
# Two stages: `build` turns the source into a wheel and installs it with its
# locked dependencies (requirements/runtime.txt) into a virtualenv; `runtime` is the same slim base with only that
# virtualenv copied in (no pip cache, no source tree, no build tools).
#
# The base image is pinned by its full version tag. For a production build pin
# the digest as well, which needs a registry this repository's CI cannot reach:
#   docker buildx imagetools inspect python:3.11.13-slim-bookworm
#   --build-arg PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:<digest>
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE requirements/runtime.txt ./
COPY operator/ operator/
# Dependencies exactly as locked (versions and hashes), then the package itself without
# resolving anything again: the image runs what CI tested.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/requeue \
    && /opt/requeue/bin/pip install --require-hashes --no-deps -r runtime.txt \
    && /opt/requeue/bin/pip install --no-deps /wheels/requeue-*.whl \
    && /opt/requeue/bin/pip check \
    && /opt/requeue/bin/requeue --help > /dev/null

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="requeue" \
      org.opencontainers.image.description="Kubernetes operator that keeps BullMQ queues healthy" \
      org.opencontainers.image.source="https://github.com/requeue-dev/requeue" \
      org.opencontainers.image.licenses="Apache-2.0"
# A named non-root user with the uid the Helm chart runs as (runAsUser 65532).
RUN groupadd --system --gid 65532 requeue \
    && useradd --system --uid 65532 --gid 65532 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin requeue
COPY --from=build /opt/requeue /opt/requeue
ENV PATH=/opt/requeue/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /tmp
USER 65532:65532
# 8080: kopf liveness (/healthz); 9090: Prometheus metrics (/metrics).
EXPOSE 8080 9090
ENTRYPOINT ["requeue"]
CMD ["run", "--standalone", "--all-namespaces"]
