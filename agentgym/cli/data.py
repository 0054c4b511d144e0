"""`agentgym data validate FILE --config RUN.yaml`: the trainer's data check, run on its own.

Names every row that would fail in the rollout (unknown tool or interaction names, no prompt, placeholders that do
not match the row's images) with the fix, against the tools and interactions the run config registers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console


def _data_validate(args: argparse.Namespace, console: Console) -> int:
    from agentgym.config import load_config
    from agentgym.rows.check import Registered, check_rows, format_problems
    from agentgym.rollout.build import registered_names
    from agentgym.rows import read_records

    cfg = load_config(args.config, args.overrides) if args.config or args.overrides else None
    registered = registered_names(cfg) if cfg is not None else Registered(None, None)
    rows = read_records(args.file)
    problems = check_rows(rows, registered, prompt_key=cfg.data.prompt_key if cfg is not None else "prompt",
                          image_key=cfg.data.image_key if cfg is not None else "images")
    if problems:
        console.print(format_problems(problems, source=str(args.file)), markup=False, highlight=False, soft_wrap=True)
    unchecked = "not checked (no --config)"
    tools = unchecked if registered.tools is None else ", ".join(sorted(registered.tools)) or "none"
    interactions = unchecked if registered.interactions is None else ", ".join(sorted(registered.interactions)) or "none"
    against = f"(tools: {tools}; interactions: {interactions})"
    failing = {p.row for p in problems if p.severity == "error"}
    if failing:
        console.print(f"[red]FAILED[/red] {args.file}: {len(failing)} of {len(rows)} row(s) would fail in the rollout "
                      f"{against}.", soft_wrap=True)
        return 1
    console.print(f"[green]OK[/green] {args.file}: {len(rows)} row(s) fit the run {against}.", soft_wrap=True)
    return 0


def add_data_commands(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="check dataset rows").add_subparsers(dest="data_command", required=True)
    validate = data.add_parser("validate", help="check rows against the run's tools and interactions before training")
    validate.add_argument("file", type=Path, help="a .parquet or .jsonl file of verl-style rows")
    validate.add_argument("--config", help="run YAML whose multi_turn.tool_config_path / interaction_config_path "
                                           "register the tools and interactions the rows must match")
    validate.add_argument("overrides", nargs="*", help="dotted overrides, e.g. "
                                                       "actor_rollout_ref.rollout.multi_turn.tool_config_path=tools.yaml")
    validate.set_defaults(handler=_data_validate)
