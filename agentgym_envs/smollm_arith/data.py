"""`python -m agentgym_envs.smollm_arith.data --out rows.parquet`: multi-digit arithmetic rows for a real instruct model."""

from __future__ import annotations

from collections.abc import Sequence

from agentgym_envs.data_cli import task_data_cli
from agentgym_envs.smollm_arith import SmolArithConfig, make_rows


def main(argv: Sequence[str] | None = None) -> None:
    """python -m agentgym_envs.smollm_arith.data --out rows.parquet [--rows N] [--seed S] [--split train]"""
    task_data_cli(make_rows, SmolArithConfig, prog="python -m agentgym_envs.smollm_arith.data",
                  description="write multi-digit arithmetic task rows (code interpreter) in verl's dataset layout",
                  argv=argv)


if __name__ == "__main__":
    main()
