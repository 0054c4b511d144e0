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
