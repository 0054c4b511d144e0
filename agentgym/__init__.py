"""agentgym: multi-turn agent environments, tool sandboxes and RL post-training for tool-using LLMs.

The public API, importable from here (each name loads its module on first use, so `import agentgym` stays light):

    BaseTool, ToolResponse, OpenAIFunctionToolSchema   write a stateful tool (verl's signatures)
    function_tool                                      turn a typed Python function into a tool
    BaseInteraction                                    write a simulated user / teacher
    AgentLoop, AgentLoopConfig                         run rows as token-exact multi-turn episodes
    Session, run_episode                               one episode's tools and control flow, engine-free
    get_parser                                         tool-call formats (hermes, qwen3_coder, gpt-oss, ...)
    load_config, AgentGymConfig                        the verl-keyed run config (YAML + dotted overrides)
    load_all_tools, load_interactions                  the registries behind tool/interaction YAML files
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "BaseTool": "agentgym.tools.base_tool",
    "ToolResponse": "agentgym.tools.schemas",
    "OpenAIFunctionToolSchema": "agentgym.tools.schemas",
    "function_tool": "agentgym.tools.function_tool",
    "BaseInteraction": "agentgym.interactions.base",
    "AgentLoop": "agentgym.rollout.agent_loop",
    "AgentLoopConfig": "agentgym.rollout.agent_loop",
    "Session": "agentgym.episode.session",
    "run_episode": "agentgym.episode.episode",
    "get_parser": "agentgym.parsers",
    "load_config": "agentgym.config",
    "AgentGymConfig": "agentgym.config",
    "load_all_tools": "agentgym.tools.registry",
    "load_interactions": "agentgym.interactions.registry",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agentgym' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
