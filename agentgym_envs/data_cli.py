"""The command line every environment's data module shares: `--out/--rows/--seed/--split`, rows written as
Parquet or JSON lines (verl's dataset layout)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

MakeRows = Callable[[Any], list[dict[str, Any]]]  # task config -> rows


def write_rows(rows: Sequence[dict[str, Any]], out: str | Path) -> Path:
    """Rows to `out`: JSON lines when it ends in .jsonl, else Parquet that reads back exactly
    (`agentgym.rows.parquet`); parent folders are created."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        with path.open("w") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
    else:
        from agentgym.rows.parquet import write_rows_parquet

        write_rows_parquet(rows, path)
    return path


def task_data_cli(make_rows: MakeRows, task_config: type, *, prog: str, description: str,
                  argv: Sequence[str] | None = None, suffixes: tuple[str, ...] = (".parquet", ".jsonl"),
                  why: str = "") -> Path:
    """`task_config` is the environment's task dataclass: built from --rows/--seed/--split (the rest at its
    defaults, --rows defaulting to its `num_rows`) and handed to `make_rows`."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--out", required=True, help=f"a {' or '.join(suffixes)} path")
    parser.add_argument("--rows", type=int, default=task_config.num_rows)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="train")
    args = parser.parse_args(argv)
    if not args.out.endswith(suffixes):
        parser.error(f"--out must end in {' or '.join(suffixes)}{why}")
    rows = make_rows(task_config(num_rows=args.rows, seed=args.seed, split=args.split))
    path = write_rows(rows, args.out)
    print(f"wrote {len(rows)} rows to {path}")
    return path
