"""Per-step metrics to the console (rich table + progress bar), a JSON-lines file and TensorBoard when installed."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
_CONSOLE_KEYS = (
    "critic/score/mean", "rollout/tool_use_share", "critic/advantages/mean", "actor/entropy", "actor/kl_loss", "actor/reward_kl",
    "actor/pg_loss", "actor/pg_clipfrac", "actor/grad_norm", "critic/vf_loss", "response_length/mean",
    "perf/update_tokens_per_s", "timing_s/step",
)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsTracker:
    """Writes every step's metrics to each chosen backend; `close()` flushes files and ends the progress bar."""

    def __init__(self, run_dir: str | Path, backends: Sequence[str], total_steps: int | None = None,
                 start_step: int = 0) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.backends = set(backends)
        self._jsonl = (self.run_dir / METRICS_FILE).open("a") if "jsonl" in self.backends else None
        self._tb = None
        if "tensorboard" in self.backends:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
            except ImportError:
                log.warning("trainer.logger lists tensorboard but it is not installed (pip install tensorboard); "
                            "metrics still go to %s", METRICS_FILE)
        self._progress = None
        if "console" in self.backends:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

            from agentgym.utils.console import make_console

            self._console = make_console()
            self._progress = Progress("[bold]training", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                      TimeRemainingColumn(), console=self._console, transient=False)
            self._task = self._progress.add_task("steps", total=total_steps, completed=start_step)
            self._progress.start()

    def resume_at(self, step: int) -> None:
        """The run continues after `step`: records of later steps (logged before a kill, then undone by resuming
        from an older checkpoint) are dropped, so no step appears twice; so is a line torn by the kill."""
        if self._jsonl is not None:
            path = self.run_dir / METRICS_FILE
            self._jsonl.close()
            lines = path.read_text().splitlines(keepends=True)
            kept = [line for line in lines if (found := _step_of(line)) is not None and found <= step]
            if len(kept) != len(lines):
                from agentgym.trainer.checkpoints import atomic_write_text

                atomic_write_text(path, "".join(kept))
            self._jsonl = path.open("a")
        if self._progress is not None:
            self._progress.update(self._task, completed=step)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if self._jsonl is not None:
            record = {"step": step, **{k: _jsonable(v) for k, v in metrics.items()}}
            self._jsonl.write(json.dumps(record) + "\n")
            self._jsonl.flush()
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, step)
        if self._progress is not None:
            from rich.table import Table

            table = Table(title=f"step {step}", show_header=True, header_style="bold")
            shown = [k for k in _CONSOLE_KEYS if k in metrics]
            for key in shown:
                table.add_column(key.split("/", 1)[-1], justify="right")
            table.add_row(*(f"{metrics[k]:.4g}" for k in shown))
            self._progress.console.print(table)
            self._progress.update(self._task, completed=step)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        if self._progress is not None:
            self._progress.stop()


def _step_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Records of a run in step order; a step logged twice (a resumed run) keeps its latest record."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; is {run_dir} a training run directory "
                                f"(trainer.default_local_dir) with the jsonl logger on?")
    by_step: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            by_step[int(record["step"])] = record
    return [by_step[s] for s in sorted(by_step)]
