"""The code-tool tests' fixtures: one local Ray per session, a real sandbox server per module."""

from tests.code_tool.conftest import _ray_session, ray_local, sandbox  # noqa: F401
