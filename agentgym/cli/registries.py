"""`agentgym tools validate|list` and `agentgym interactions validate|list`.

`validate` takes either kind of file: it looks at the top-level key (`tools` or `interaction`) and checks what it
finds, so pointing the wrong subcommand at a file still checks it instead of failing on the layout. MCP entries are
checked offline (their servers file and config); `--connect` also starts or reaches their servers and lists the
tools they serve, as a run would.
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


def _mcp_tools(path: Path, connect: bool) -> list[tuple[Any, dict | None]]:
    """Each MCP entry of the file with its tools by name (None without `connect`: the servers are not contacted)."""
    from agentgym.tools.mcp_tool import build_mcp_tools
    from agentgym.tools.registry import load_mcp_entries

    return [(entry, build_mcp_tools(entry) if connect else None) for entry in load_mcp_entries(path)]


def _validate_tools(path: Path, console: Console, connect: bool = False) -> None:
    from agentgym.tools.registry import load_tool_specs

    specs = load_tool_specs(path)
    console.print(f"[green]OK[/green] {path}: {len(specs)} tool(s): {', '.join(s.name for s in specs)}")
    for spec in specs:
        for warning in spec.warnings:
            console.print(f"[yellow]warning[/yellow] {warning}", soft_wrap=True)
    for entry, tools in _mcp_tools(path, connect):
        servers = ", ".join(entry.servers)
        if tools is None:
            console.print(f"[green]OK[/green] tools[{entry.index}] (mcp): servers {servers} (not contacted; "
                          "--connect lists their tools)", soft_wrap=True)
        else:
            console.print(f"[green]OK[/green] tools[{entry.index}] (mcp): servers {servers} serve {len(tools)} "
                          f"tool(s): {', '.join(tools)}", soft_wrap=True)


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


def validate_registry_file(path: Path, console: Console, *, expected: str, connect: bool = False) -> int:
    """Check a tool or interaction YAML (whichever the file is; `expected` when it is neither)."""
    kinds = _kinds(path) or [expected]
    if expected not in kinds:
        console.print(f"{path} is an {' and '.join(kinds)} config; checking it as one.")
    for kind in kinds:
        if kind == "tools":
            _validate_tools(path, console, connect)
        else:
            _validate_interactions(path, console)
    return 0


def _parameters(schema: Any) -> str:
    params = schema.function.parameters
    return ", ".join(f"{k}{'*' if k in params.required else ''}: {v.type}" for k, v in params.properties.items())


def _tools_table(path: Path, connect: bool = False) -> Table:
    from agentgym.tools.registry import load_tool_specs

    table = Table(title=str(path))
    for column in ("name", "class", "parameters", "description"):
        table.add_column(column)
    for spec in load_tool_specs(path):
        table.add_row(spec.name, spec.class_name, _parameters(spec.tool_schema), spec.tool_schema.function.description)
    for entry, tools in _mcp_tools(path, connect):
        if tools is None:
            table.add_row(f"tools[{entry.index}] (mcp)", entry.tool_class.__name__, "-",
                          f"the tools of servers {', '.join(entry.servers)} (--connect lists them)")
            continue
        for name, tool in tools.items():
            table.add_row(name, f"{type(tool).__name__} ({tool.pool.server.name})", _parameters(tool.tool_schema),
                          tool.tool_schema.function.description)
    return table


def _interactions_table(path: Path) -> Table:
    from agentgym.interactions.registry import load_interaction_specs

    table = Table(title=str(path))
    for column in ("name (interaction_kwargs.name)", "class", "config"):
        table.add_column(column)
    for spec in load_interaction_specs(path):
        table.add_row(spec.name, spec.class_name, ", ".join(f"{k}={v!r}" for k, v in spec.config.items()) or "-")
    return table


def list_registry_file(path: Path, console: Console, *, expected: str, connect: bool = False) -> int:
    for kind in _kinds(path) or [expected]:
        console.print(_tools_table(path, connect) if kind == "tools" else _interactions_table(path))
    return 0


def add_tool_commands(sub: Any) -> None:
    """`agentgym tools validate|list FILE [--connect]`."""
    commands = sub.add_parser("tools", help="inspect tool YAML registrations").add_subparsers(
        dest="tools_command", required=True)
    validate = commands.add_parser("validate", help="check a tool YAML file: syntax, classes, JSON Schemas "
                                   "(meta-schema, required names defined), names, MCP entries (an interaction file "
                                   "is recognised and checked)")
    listing = commands.add_parser("list", help="list the tools a YAML file registers")
    for parser in (validate, listing):
        parser.add_argument("file", type=Path)
        parser.add_argument("--connect", action="store_true",
                            help="start or reach the MCP servers of `type: mcp` entries and list their tools")
    validate.set_defaults(handler=lambda args, console: validate_registry_file(
        args.file, console, expected="tools", connect=args.connect))
    listing.set_defaults(handler=lambda args, console: list_registry_file(
        args.file, console, expected="tools", connect=args.connect))


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
