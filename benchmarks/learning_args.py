"""The command line the learning benchmarks share (colocated_learning.py, algorithms_learning.py): both start from a
quickstart run's SFT model, run its RL stage and score held-out rows, so they take the same arguments; each picks
its own step and evaluation defaults. Imported from the scripts' own folder (they run as `python3 benchmarks/...`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def learning_parser(description: str, *, rl_steps: int, eval_rows: int) -> argparse.ArgumentParser:
    """--sft-model, --run-dir, --seed, --rl-steps, --eval-rows, --sft-rows and trailing dotted config overrides; a
    script adds its own arguments to the parser it gets."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--sft-model", type=Path, required=True, help="a quickstart run's models/sft directory")
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rl-steps", type=int, default=rl_steps)
    parser.add_argument("--eval-rows", type=int, default=eval_rows)
    parser.add_argument("--sft-rows", type=int, default=2048, help="as given to the quickstart run (held-out dedup)")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides")
    return parser
