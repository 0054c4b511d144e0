"""`python -m agentgym_envs.code_arith.data --out rows.parquet`: arithmetic's tasks with the code interpreter's prompt."""

from __future__ import annotations

from collections.abc import Sequence

from agentgym_envs.arithmetic.data import ArithmeticTaskConfig
from agentgym_envs.code_arith import make_rows
from agentgym_envs.data_cli import task_data_cli


def main(argv: Sequence[str] | None = None) -> None:
    """python -m agentgym_envs.code_arith.data --out rows.parquet [--rows N] [--seed S] [--split train]"""
    task_data_cli(
        make_rows,
        ArithmeticTaskConfig,
        prog="python -m agentgym_envs.code_arith.data",
        description="write code-interpreter arithmetic task rows in verl's dataset layout",
        argv=argv,
    )


if __name__ == "__main__":
    main()
