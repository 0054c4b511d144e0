"""Sandbox Fusion-compatible code-execution service (bubblewrap + cgroups isolation).

Embedding: `create_app(SandboxSettings(...))` returns a FastAPI app; `python -m sandbox_server` serves it.
"""

from .app import create_app, start_runtime
from .models import CommandRunResult, CommandRunStatus, RunCodeRequest, RunCodeResponse, RunStatus
from .settings import SandboxSettings

__all__ = ["create_app", "start_runtime", "SandboxSettings", "RunCodeRequest", "RunCodeResponse",
           "CommandRunResult", "CommandRunStatus", "RunStatus"]
