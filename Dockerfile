# agentgym sandbox server: runs untrusted code (Sandbox Fusion's /run_code API) in bubblewrap sandboxes.
#
#   docker compose up -d            -> http://localhost:8080 (see docker-compose.yml for the security settings)
#
# Build arguments (the defaults are the public ones; scripts/docker/build_image.sh passes this host's mirrors):
#   BASE_IMAGE                a Debian bookworm image; scripts/docker/build_base_image.sh makes one without a registry
#   DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR, DEBIAN_SUITE, PIP_INDEX_URL
#   EXTRA_CA_CERTS            PEM text of extra CAs trusted while pip downloads (a TLS-intercepting proxy), not kept
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
LABEL org.agentgym.image=sandbox

ARG DEBIAN_MIRROR=http://deb.debian.org/debian
ARG DEBIAN_SECURITY_MIRROR=http://deb.debian.org/debian-security
ARG DEBIAN_SUITE=bookworm
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG EXTRA_CA_CERTS=

ENV LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# Toolchains and Python dependencies first: this layer is rebuilt only when the package lists change.
# (The [t] globs let the build work while sandbox_server/ does not ship these files.)
COPY scripts/docker/image/install_packages.sh sandbox_server/apt-packages.tx[t] sandbox_server/requirements.tx[t] /tmp/build/
RUN DEBIAN_MIRROR="$DEBIAN_MIRROR" DEBIAN_SECURITY_MIRROR="$DEBIAN_SECURITY_MIRROR" DEBIAN_SUITE="$DEBIAN_SUITE" \
    PIP_INDEX_URL="$PIP_INDEX_URL" EXTRA_CA_CERTS="$EXTRA_CA_CERTS" sh /tmp/build/install_packages.sh \
 && rm -rf /tmp/build

COPY scripts/docker/image/container_init.sh /usr/local/lib/agentgym/container_init.sh
COPY sandbox_server/ /opt/agentgym/sandbox_server/
# The retrieval server (docker-compose.yml's `retrieval` service) runs from the same image; it needs no toolchain.
COPY retrieval_server/ /opt/agentgym/retrieval_server/
RUN mkdir -p /var/lib/agentgym/work
WORKDIR /opt/agentgym
# The server's interpreter is the venv's; user code runs with the system python3 (clean, no server packages).
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONPATH=/opt/agentgym \
    SANDBOX_HOST=0.0.0.0 \
    SANDBOX_PORT=8080

EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v1/ping' % os.environ.get('SANDBOX_PORT', '8080'), timeout=4)"]

# tini reaps orphans and forwards signals; container_init.sh does the container-only privileged steps, drops
# CAP_SYS_ADMIN and execs sandbox_server/start.sh, the start-up script shared with native runs. CMD adds flags.
ENTRYPOINT ["/usr/bin/tini", "--", "/bin/sh", "-c", "exec /usr/local/lib/agentgym/container_init.sh --host \"$SANDBOX_HOST\" --port \"$SANDBOX_PORT\" \"$@\"", "container_init"]
CMD ["--work-root", "/var/lib/agentgym/work"]
