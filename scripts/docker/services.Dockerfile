# agentgym services image: the environment server (docker-compose.yml's `environment` service) on top of the
# sandbox image's Debian + Python venv. The server imports no torch: only the light dependencies below go in.
#
#   scripts/docker/build_image.sh && docker compose --profile services up -d environment   -> http://localhost:8300
#
# Build arguments: BASE_IMAGE (default the sandbox image built by scripts/docker/build_image.sh), PIP_INDEX_URL.
ARG BASE_IMAGE=agentgym-sandbox:latest
FROM ${BASE_IMAGE}
LABEL org.agentgym.image=services
ARG PIP_INDEX_URL=https://pypi.org/simple

COPY scripts/docker/services-requirements.txt /tmp/build/services-requirements.txt
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --index-url "$PIP_INDEX_URL" \
      -r /tmp/build/services-requirements.txt && rm -rf /tmp/build
COPY pyproject.toml README.md /opt/agentgym-src/
COPY agentgym/ /opt/agentgym-src/agentgym/
COPY agentgym_envs/ /opt/agentgym-src/agentgym_envs/
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps /opt/agentgym-src

# Tool and interaction YAMLs (and any tool modules they name) are mounted at /config, which is on PYTHONPATH.
ENV PYTHONPATH=/config:/opt/agentgym
WORKDIR /config
EXPOSE 8300
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v1/health' % os.environ.get('ENVIRONMENT_PORT', '8300'), timeout=4)"]
ENTRYPOINT ["/usr/bin/tini", "--", "python3", "-m", "agentgym.services.environment"]
