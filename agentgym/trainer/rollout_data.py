"""`trainer.rollout_data_dir`: each training step's trajectories on disk, one file per step, as verl names them
(`<step>.jsonl`), so `agentgym view` can page through a run step by step."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from agentgym.trajectory import Trajectory
from agentgym.rollout.trajectory_io import write_jsonl, write_parquet


def write_step_trajectories(trajectories: Sequence[Trajectory], step: int, directory: str | Path, *,
                            parquet: bool = False) -> Path:
    """Write `<directory>/<step>.jsonl` (and `<step>.parquet` when asked); a resumed run rewrites its steps."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{step}.jsonl"
    write_jsonl(trajectories, path)
    if parquet:
        write_parquet(trajectories, directory / f"{step}.parquet")
    return path
