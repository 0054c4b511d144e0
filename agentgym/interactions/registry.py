"""Interaction registrations from YAML, in verl's layout: `interaction: [{name, class_name, config}]`."""

from __future__ import annotations

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


def default_interaction_name(class_name: str) -> str:
    """verl's rule, so rows written for a verl config find the same name: the class name without its
    `Interaction` suffix, lower-cased (`MathFeedbackInteraction` -> `mathfeedback`)."""
    short = class_name.rpartition(".")[2]
    return (short.removesuffix("Interaction") or short).lower()


@dataclass(frozen=True)
class InteractionEntry:
    name: str
    class_name: str
    config: dict[str, Any]
    entry: str


def read_interaction_entries(path: str | Path) -> list[InteractionEntry]:
    """The file's entries, checked and named, without importing their classes (for checks that need names only)."""
    file = str(path)
    entries: list[InteractionEntry] = []
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
        name = raw.get("name") or default_interaction_name(class_name)
        entry = f"interaction[{index}] ({name})"
        config = raw.get("config") or {}
        if not isinstance(config, dict):
            raise ConfigError("`config` must be a mapping.", file=file, entry=entry, fix="write `config: {}`.")
        if any(e.name == name for e in entries):
            raise ConfigError(
                f"interaction name `{name}` is used twice.", file=file, entry=entry, fix="give each interaction its own `name`."
            )
        entries.append(InteractionEntry(name=name, class_name=class_name, config=config, entry=entry))
    return entries


@dataclass(frozen=True)
class InteractionSpec:
    """One checked YAML entry with its class imported, not yet built (so `agentgym interactions list` constructs
    nothing)."""

    name: str
    class_name: str
    interaction_class: type[BaseInteraction]
    config: dict[str, Any]


def load_interaction_specs(path: str | Path) -> list[InteractionSpec]:
    """Parse and check every entry of an interaction YAML file and import its class; the first problem raises."""
    file = str(path)
    return [
        InteractionSpec(name=e.name, class_name=e.class_name, config=e.config, interaction_class=import_class(
            e.class_name, BaseInteraction, aliases=VERL_INTERACTION_ALIASES, file=file, entry=e.entry))
        for e in read_interaction_entries(path)
    ]


def build_interactions(specs: list[InteractionSpec]) -> dict[str, BaseInteraction]:
    """Instantiate interactions, keyed by the name rows pick them by; each gets its name in its config, as in verl."""
    return {spec.name: spec.interaction_class({**spec.config, "name": spec.name}) for spec in specs}


def load_interactions(path: str | Path) -> dict[str, BaseInteraction]:
    """Build every interaction in the file, keyed by name (rows pick one with `interaction_kwargs.name`)."""
    return build_interactions(load_interaction_specs(path))
