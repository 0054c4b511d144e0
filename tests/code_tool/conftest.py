"""Fixtures of the code-tool tests: a local Ray (started once) and loopback HTTP servers."""

from __future__ import annotations

import pytest


def _ray_init(ray) -> None:
    try:
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    except Exception:  # a start under heavy load can time out once; a second try gets a clean slate
        ray.shutdown()
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)


@pytest.fixture(scope="session")
def _ray_session():
    import ray

    started = not ray.is_initialized()
    if started:
        _ray_init(ray)
    yield ray
    if started and ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def ray_local(_ray_session):
    """One local Ray for the session (reused if another area's tests started one; restarted if one shut it down)."""
    if not _ray_session.is_initialized():
        _ray_init(_ray_session)
    return _ray_session


@pytest.fixture
def fault_server():
    from .fault_server import FaultServer

    server = FaultServer().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
async def _close_pooled_http():
    """Each test runs on its own event loop; close that loop's pooled connections when the test ends."""
    yield
    from agentgym.tools.sandbox_fusion import aclose_http_sessions

    await aclose_http_sessions()


@pytest.fixture(scope="module")
def sandbox():
    """A real sandbox server, isolation on (bubblewrap + cgroups work on these machines), for a test module."""
    from .sandbox_process import SandboxProcess

    server = SandboxProcess().start()
    yield server
    server.stop()
