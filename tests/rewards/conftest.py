"""A local Ray for the reward-model tests (the code-tool tests' fixture: one Ray per session)."""

from tests.code_tool.conftest import _ray_session, ray_local  # noqa: F401
