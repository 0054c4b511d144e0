"""Interaction registrations from YAML, in verl's layout: `interaction: [{name, class_name, config}]`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentgym.errors import ConfigError
from agentgym.interactions.base import BaseInteraction
from agentgym.loading import import_class, read_yaml_list

INTERACTION_YAML_EXAMPLE = """interaction:
  - name: math_feedback
    class_name: agentgym.interactions.math_feedback.MathFeedbackInteraction
    config: {max_attempts: 3}"""

# verl's class paths for interactions that have an agentgym counterpart.
VERL_INTERACTION_ALIASES: dict[str, str] = {
    "verl.interactions.base.BaseInteraction": "agentgym.interactions.base.BaseInteraction",
}


def _default_name(class_name: str) -> str:
    short = class_name.rpartition(".")[2].removesuffix("Interaction") or class_name
    return re.sub(r"(?<!^)(?=[A-Z])", "_", short).lower()


@dataclass(frozen=True)
class InteractionSpec:
    """One checked YAML entry, not yet built (so `agentgym interactions list` constructs nothing)."""

    name: str
    class_name: str
    interaction_class: type[BaseInteraction]
    config: dict[str, Any]


def load_interaction_specs(path: str | Path) -> list[InteractionSpec]:
    """Parse and check every entry of an interaction YAML file; the first problem found raises ConfigError."""
    file = str(path)
    specs: dict[str, InteractionSpec] = {}
    for index, raw in enumerate(read_yaml_list(path, "interaction", INTERACTION_YAML_EXAMPLE)):
        entry = f"interaction[{index}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("class_name"), str):
            raise ConfigError(
                "each interaction must be a mapping with `class_name`.",
                file=file,
                entry=entry,
                fix=f"write it as:\n{INTERACTION_YAML_EXAMPLE}",
            )
        class_name = raw["class_name"]
        name = raw.get("name") or _default_name(class_name)
        entry = f"interaction[{index}] ({name})"
        config = raw.get("config") or {}
        if not isinstance(config, dict):
            raise ConfigError("`config` must be a mapping.", file=file, entry=entry, fix="write `config: {}`.")
        if name in specs:
            raise ConfigError(
                f"interaction name `{name}` is used twice.", file=file, entry=entry, fix="give each interaction its own `name`."
            )
        cls = import_class(class_name, BaseInteraction, aliases=VERL_INTERACTION_ALIASES, file=file, entry=entry)
        specs[name] = InteractionSpec(name=name, class_name=class_name, interaction_class=cls, config=config)
    return list(specs.values())


def build_interactions(specs: list[InteractionSpec]) -> dict[str, BaseInteraction]:
    """Instantiate interactions, keyed by the name rows pick them by; each gets its name in its config, as in verl."""
    return {spec.name: spec.interaction_class({**spec.config, "name": spec.name}) for spec in specs}


def load_interactions(path: str | Path) -> dict[str, BaseInteraction]:
    """Build every interaction in the file, keyed by name (rows pick one with `interaction_kwargs.name`)."""
    return build_interactions(load_interaction_specs(path))
