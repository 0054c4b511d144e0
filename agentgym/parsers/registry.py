"""Tool-call parsers by the names configs use (`actor_rollout_ref.rollout.multi_turn.format` in verl is "hermes")."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from types import MappingProxyType

from agentgym.errors import ConfigError
from agentgym.parsers.base import ToolCallParser
from agentgym.parsers.hermes import HermesToolCallParser
from agentgym.parsers.llama3_json import Llama3JsonToolCallParser
from agentgym.parsers.mistral import MistralToolCallParser

_FACTORIES: Mapping[str, Callable[[], ToolCallParser]] = MappingProxyType(
    {
        "hermes": HermesToolCallParser,
        "qwen": HermesToolCallParser,
        "qwen25": HermesToolCallParser,
        "qwen3": HermesToolCallParser,
        "llama3_json": Llama3JsonToolCallParser,
        "llama3": Llama3JsonToolCallParser,
        "mistral": MistralToolCallParser,
        "mistral_v11": partial(MistralToolCallParser, style="v11"),
        "mistral_v13": partial(MistralToolCallParser, style="v13"),
    }
)


def available_parsers() -> list[str]:
    """Every name `get_parser` accepts, aliases included."""
    return sorted(_FACTORIES)


def get_parser(name: str) -> ToolCallParser:
    """A new parser for the format `name` (parsers hold no state between turns, so one can serve a whole run)."""
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ConfigError(
            f"unknown tool-call parser {name!r}.",
            fix=f"use one of: {', '.join(available_parsers())}.",
        )
    return factory()
