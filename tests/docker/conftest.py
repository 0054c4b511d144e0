"""Fixtures for the sandbox image test: a Docker engine, the image built from the top-level Dockerfile, and the
compose service brought up with host networking (once per available compose flavour: v2 plugin and Debian's v1)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], *, timeout: float, env: dict | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@dataclass(frozen=True)
class ComposeService:
    url: str
    compose: tuple[str, ...]
    project: str
    canary: str  # a secret in the server's environment that sandboxed code must never see

    def container_id(self) -> str:
        out = _run([*self.compose, *self.files_args(), "-p", self.project, "ps", "-q", "sandbox"], timeout=60)
        return out.stdout.strip().splitlines()[-1]

    def files_args(self) -> list[str]:
        return ["-f", "docker-compose.yml", "-f", "docker-compose.hostnet.yml", "-f", str(self.override_file())]

    def override_file(self) -> Path:
        return Path(os.environ.get("TMPDIR", "/tmp")) / f"{self.project}.override.yml"



SCRIPTS = REPO / "scripts" / "docker"
IMAGE_TAG = "agentgym-sandbox:test"


def _report(msg: str) -> None:
    # Shown with -s and in CI logs; timing figures are reported, never asserted.
    print(f"[tests/docker] {msg}", file=sys.stderr, flush=True)


def _tail(text: str, n: int = 40) -> str:
    return "\n".join(text.splitlines()[-n:])


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """Start (or reuse) a Docker engine without a default bridge. Skips only when no engine can be started."""
    if os.geteuid() != 0 and shutil.which("docker") is None:
        pytest.skip("no Docker engine: docker is not installed and installing/starting dockerd needs root")
    started = time.monotonic()
    try:
        proc = _run(["bash", str(SCRIPTS / "start_dockerd.sh")], timeout=900)
    except subprocess.TimeoutExpired:
        pytest.skip("no Docker engine: starting dockerd timed out")
    if proc.returncode != 0:
        reason = f"no Docker engine could be started here: {_tail(proc.stderr, 15)}"
        print(reason, file=sys.stderr)
        pytest.skip(reason)
    _report(f"docker engine ready in {time.monotonic() - started:.1f}s")


@pytest.fixture(scope="session")
def sandbox_image(docker_engine: None) -> str:
    """The service image, on a locally built debootstrap base (no registry), with this host's package mirrors."""
    t0 = time.monotonic()
    base = _run(["bash", str(SCRIPTS / "build_base_image.sh")], timeout=1200)
    assert base.returncode == 0, f"base image build failed:\n{_tail(base.stderr)}"
    base_tag = base.stdout.strip().splitlines()[-1]
    t1 = time.monotonic()
    env = dict(os.environ, BASE_IMAGE=base_tag, IMAGE_TAG=IMAGE_TAG)
    img = _run(["bash", str(SCRIPTS / "build_image.sh")], env=env, timeout=3000)
    assert img.returncode == 0, f"service image build failed:\n{_tail(img.stderr, 60)}"
    t2 = time.monotonic()
    _report(f"base image {base_tag}: {t1 - t0:.1f}s; service image {IMAGE_TAG}: {t2 - t1:.1f}s")
    return IMAGE_TAG


def compose_flavours() -> list[list[str]]:
    """Compose commands present here: the v2 CLI plugin and Debian's docker-compose v1."""
    found = []
    if shutil.which("docker") and _run(["docker", "compose", "version"], timeout=30).returncode == 0:
        found.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        found.append(["docker-compose"])
    return found


@pytest.fixture(scope="session")
def compose_commands() -> list[list[str]]:
    found = compose_flavours()
    assert found, "no compose command: install Debian's docker-compose (bash scripts/install.sh --test) or compose v2"
    _report("compose flavours here: " + ", ".join(" ".join(c) for c in found))
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, deadline_s: float) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            if httpx.get(f"{url}/v1/ping", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


@pytest.fixture(scope="module", params=compose_flavours() or [None], ids=lambda c: " ".join(c) if c else "none")
def compose_service(request: pytest.FixtureRequest, sandbox_image: str) -> Iterator[ComposeService]:
    compose = request.param
    assert compose is not None, ("no compose command: install Debian's docker-compose "
                                 "(bash scripts/install.sh --test) or the compose v2 plugin")
    port = _free_port()
    svc = ComposeService(url=f"http://127.0.0.1:{port}", compose=tuple(compose),
                         project=f"agentgym-test-{uuid.uuid4().hex[:8]}", canary=f"canary-{uuid.uuid4().hex}")
    svc.override_file().write_text(
        f"services:\n  sandbox:\n    environment:\n      AGENTGYM_TEST_SECRET: \"{svc.canary}\"\n")
    env = dict(os.environ, AGENTGYM_SANDBOX_PORT=str(port), AGENTGYM_SANDBOX_IMAGE=sandbox_image)
    base = [*compose, *svc.files_args(), "-p", svc.project]
    t0 = time.monotonic()
    up = _run([*base, "up", "-d", "--no-build"], env=env, timeout=300)
    try:
        assert up.returncode == 0, f"{' '.join(compose)} up failed:\n{_tail(up.stderr)}"
        ready = _wait_ready(svc.url, 90)
        logs = _run([*base, "logs", "--no-color"], env=env, timeout=60)
        assert ready, f"service not answering /v1/ping on {svc.url}; container logs:\n{_tail(logs.stdout + logs.stderr)}"
        _report(f"{' '.join(compose)} up -> ready in {time.monotonic() - t0:.1f}s at {svc.url}")
        yield svc
    finally:
        down = _run([*base, "down", "-v", "--remove-orphans"], env=env, timeout=300)
        svc.override_file().unlink(missing_ok=True)
        assert down.returncode == 0, f"{' '.join(compose)} down failed:\n{_tail(down.stderr)}"
