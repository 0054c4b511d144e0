"""The code-interpreter tool: a Sandbox Fusion client with pooled HTTP, rate limits, retries and an embedded server."""

from agentgym.tools.sandbox_fusion.config import SandboxFusionToolConfig
from agentgym.tools.sandbox_fusion.http import aclose_http_sessions
from agentgym.tools.sandbox_fusion.metrics import CallMetrics, Outcome
from agentgym.tools.sandbox_fusion.tool import DEFAULT_TOOL_SCHEMA, SandboxFusionTool

__all__ = [
    "CallMetrics",
    "DEFAULT_TOOL_SCHEMA",
    "Outcome",
    "SandboxFusionTool",
    "SandboxFusionToolConfig",
    "aclose_http_sessions",
]
