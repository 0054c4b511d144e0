"""Tool-call parsers by the names configs use (`actor_rollout_ref.rollout.multi_turn.format` in verl is "hermes")."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from importlib import resources
from types import MappingProxyType
from typing import Any

from agentgym.errors import ConfigError
from agentgym.parsers.base import ToolCallParser
from agentgym.parsers.harmony import HarmonyToolCallParser
from agentgym.parsers.hermes import HermesToolCallParser
from agentgym.parsers.llama3_json import Llama3JsonToolCallParser
from agentgym.parsers.mistral import MistralToolCallParser
from agentgym.parsers.qwen3_coder import Qwen3CoderToolCallParser

_FACTORIES: Mapping[str, Callable[..., ToolCallParser]] = MappingProxyType(
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
        "qwen3_coder": Qwen3CoderToolCallParser,
        "gpt-oss": HarmonyToolCallParser,
        "gpt_oss": HarmonyToolCallParser,
        "harmony": HarmonyToolCallParser,
    }
)


def available_parsers() -> list[str]:
    """Every name `get_parser` accepts, aliases included."""
    return sorted(_FACTORIES)


def get_parser(name: str, tools: Sequence[Any] | None = None) -> ToolCallParser:
    """A new parser for the format `name` (parsers hold no state between turns, so one can serve a whole run).

    `tools` (OpenAI tool schemas) matter to formats whose text does not carry argument types (qwen3_coder)."""
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ConfigError(
            f"unknown tool-call parser {name!r}.",
            fix=f"use one of: {', '.join(available_parsers())}.",
        )
    if factory is Qwen3CoderToolCallParser:
        return factory(tools)
    return factory()


_TEMPLATES: Mapping[str, str] = MappingProxyType(
    {"qwen3_coder": "qwen3_coder.jinja", "gpt-oss": "gpt_oss.jinja", "gpt_oss": "gpt_oss.jinja", "harmony": "gpt_oss.jinja"}
)


def chat_template(name: str) -> str:
    """The Jinja chat template that renders tools, calls and tool results in format `name`, for a tokenizer whose
    own template does not (`tokenizer.chat_template = chat_template("qwen3_coder")`). The hermes family's is
    `agentgym.models.tokenizer.chat_template_text()`; Llama 3 and Mistral tokenizers ship theirs."""
    get_parser(name)  # an unknown name fails with the list of formats
    file = _TEMPLATES.get(name)
    if file is None:
        raise ConfigError(f"agentgym ships no chat template for the {name!r} tool-call format.",
                          fix=f"use the tokenizer's own template, or one of: {', '.join(sorted(_TEMPLATES))}.")
    return resources.files("agentgym.parsers").joinpath("templates", file).read_text(encoding="utf-8")
