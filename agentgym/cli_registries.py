"""`agentgym tools validate|list` and `agentgym interactions validate|list`.

`validate` takes either kind of file: it looks at the top-level key (`tools` or `interaction`) and checks what it
finds, so pointing the wrong subcommand at a file still checks it instead of failing on the layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from agentgym.errors import ConfigError


def _kinds(path: Path) -> list[str]:
    """Which registries the file holds; unreadable or other files count as what the command asked for, so the
    registry's own loader reports the problem."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []
    if not isinstance(data, dict):
        return []
    return [kind for kind in ("tools", "interaction") if kind in data]


def _validate_tools(path: Path, console: Console) -> None:
    from agentgym.tools.registry import load_tool_specs

    specs = load_tool_specs(path)
    console.print(f"[green]OK[/green] {path}: {len(specs)} tool(s): {', '.join(s.name for s in specs)}")
    for spec in specs:
        for warning in spec.warnings:
            console.print(f"[yellow]warning[/yellow] {warning}", soft_wrap=True)


def _validate_interactions(path: Path, console: Console) -> None:
    from agentgym.interactions.registry import build_interactions, load_interaction_specs

    specs = load_interaction_specs(path)
    for spec in specs:  # a constructor that rejects its config is a config error too
        try:
            build_interactions([spec])
        except Exception as exc:
            raise ConfigError(f"`{spec.class_name}({spec.config})` failed: {type(exc).__name__}: {exc}.",
                              file=str(path), entry=f"interaction `{spec.name}`",
                              fix="correct the entry's `config`.") from None
    shown = ", ".join(f"{s.name} ({s.class_name})" for s in specs)
    console.print(f"[green]OK[/green] {path}: {len(specs)} interaction(s): {shown}")


def validate_registry_file(path: Path, console: Console, *, expected: str) -> int:
    """Check a tool or interaction YAML (whichever the file is; `expected` when it is neither)."""
    kinds = _kinds(path) or [expected]
    if expected not in kinds:
        console.print(f"{path} is an {' and '.join(kinds)} config; checking it as one.")
    for kind in kinds:
        (_validate_tools if kind == "tools" else _validate_interactions)(path, console)
    return 0


def _tools_table(path: Path) -> Table:
    from agentgym.tools.registry import load_tool_specs

    table = Table(title=str(path))
    for column in ("name", "class", "parameters", "description"):
        table.add_column(column)
    for spec in load_tool_specs(path):
        params = spec.tool_schema.function.parameters
        shown = ", ".join(f"{k}{'*' if k in params.required else ''}: {v.type}" for k, v in params.properties.items())
        table.add_row(spec.name, spec.class_name, shown, spec.tool_schema.function.description)
    return table


def _interactions_table(path: Path) -> Table:
    from agentgym.interactions.registry import load_interaction_specs

    table = Table(title=str(path))
    for column in ("name (interaction_kwargs.name)", "class", "config"):
        table.add_column(column)
    for spec in load_interaction_specs(path):
        table.add_row(spec.name, spec.class_name, ", ".join(f"{k}={v!r}" for k, v in spec.config.items()) or "-")
    return table


def list_registry_file(path: Path, console: Console, *, expected: str) -> int:
    for kind in _kinds(path) or [expected]:
        console.print(_tools_table(path) if kind == "tools" else _interactions_table(path))
    return 0


def add_interaction_commands(sub: Any) -> None:
    """`agentgym interactions validate|list FILE`."""
    commands = sub.add_parser("interactions", help="inspect interaction YAML registrations").add_subparsers(
        dest="interactions_command", required=True)
    validate = commands.add_parser("validate", help="check an interaction YAML file: syntax, classes, configs, names "
                                   "(a tool file is recognised and checked as one)")
    validate.add_argument("file", type=Path)
    validate.set_defaults(
        handler=lambda args, console: validate_registry_file(args.file, console, expected="interaction"))
    listing = commands.add_parser("list", help="list the interactions a YAML file registers, by the name rows use")
    listing.add_argument("file", type=Path)
    listing.set_defaults(handler=lambda args, console: list_registry_file(args.file, console, expected="interaction"))
