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


def tool_call_metrics(trajectories: Sequence[Trajectory]) -> dict[str, float]:
    """The step's tool calls summed from each call's metrics (what the sandbox answered for code calls): counts,
    means and maxima of the times, kills by reason, and how many servers answered.

    `tools/queue_wait_s` is time held by the tool's own limits before a request left; `tools/run_s` and
    `tools/cpu_s` the program's wall and CPU time as the sandbox measured them; `tools/killed/<reason>` the calls
    the sandbox stopped (timeout, memory, output_limit, cpu_time, pids).
    """
    calls = [m for t in trajectories for m in t.tool_metrics if m.get("name") is not None]
    out: dict[str, float] = {"tools/calls": float(len(calls))}
    if not calls:
        return out
    out["tools/errors"] = float(sum(1 for m in calls if m.get("error")))
    out["tools/infra_failures"] = float(sum(1 for m in calls if m.get("infrastructure_failure")))
    out["tools/retries"] = float(sum(m.get("retries") or 0 for m in calls))
    for key, name in (("latency_s", "latency_s"), ("queue_wait_s", "queue_wait_s"), ("execution_time_s", "run_s"),
                      ("cpu_time_s", "cpu_s")):
        values = [float(m[key]) for m in calls if isinstance(m.get(key), (int, float))]
        if values:
            out[f"tools/{name}/mean"] = sum(values) / len(values)
            out[f"tools/{name}/max"] = max(values)
    for m in calls:
        reason = m.get("kill_reason")
        if reason:
            out[f"tools/killed/{reason}"] = out.get(f"tools/killed/{reason}", 0.0) + 1.0
    servers = {m["server"] for m in calls if m.get("server")}
    if servers:
        out["tools/servers"] = float(len(servers))
    return out
