"""Fixtures of the code-tool tests: a local Ray (started once) and loopback HTTP servers."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole session; reused if another area's tests already started one."""
    import ray

    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=True, configure_logging=False)
        started = True
    yield ray
    if started:
        ray.shutdown()


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
