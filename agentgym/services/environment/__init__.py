"""The environment server: `python3 -m agentgym.services.environment --tools TOOLS.yaml --interactions INTER.yaml`.
Clients are `agentgym.episode.remote.RemoteSession` (via `RemoteEnvironment`), or anything speaking agentgym.episode.wire."""

from agentgym.services.environment.server import EnvironmentServer, EnvironmentServerConfig

__all__ = ["EnvironmentServer", "EnvironmentServerConfig"]
