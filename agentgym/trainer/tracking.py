"""Per-step metrics to the backends `trainer.logger` names: console (rich table + progress), a JSON-lines file,
TensorBoard, Weights & Biases and MLflow.

Every backend gets the same metric names (`critic/score/mean`, `timing_s/step`, ...), the run's config once, and each
step's trajectory table (the first `trainer.tracking.trajectory_table_rows` trajectories: prompt, response, reward,
tool calls): a W&B Table, an MLflow JSON artifact (`trajectories/step_000001.json`, MLflow's table layout), a
TensorBoard text. W&B and MLflow are optional packages (`pip install agentgym[tracking]`); naming one that is not
installed is an error that says so, before the run starts. A resumed run continues the same W&B / MLflow run (its id
is kept in the run directory).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence

from agentgym.errors import ConfigError

if TYPE_CHECKING:
    from agentgym.config.schema import AgentGymConfig, TrackingConfig
    from agentgym.trajectory import Trajectory

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
_CONSOLE_KEYS = (
    "critic/score/mean", "rollout/tool_use_share", "critic/advantages/mean", "actor/entropy", "actor/kl_loss", "actor/reward_kl",
    "actor/pg_loss", "actor/pg_clipfrac", "actor/grad_norm", "critic/vf_loss", "response_length/mean",
    "perf/update_tokens_per_s", "timing_s/step", "memory/rollout/reserved_gib", "memory/update/reserved_gib",
)
BACKENDS = ("console", "jsonl", "tensorboard", "wandb", "mlflow")
TABLE_COLUMNS = ("step", "uid", "group_id", "reward", "num_tool_calls", "assistant_turns", "response_tokens",
                 "finish_reason", "error", "prompt", "response")
_PROMPT_CHARS = 2000
_RESPONSE_CHARS = 8000


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal parts
        return "".join(p.get("text", "<image>") if isinstance(p, dict) else str(p) for p in content)
    return "" if content is None else str(content)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 40] + f"\n[... {len(text) - limit + 40} characters cut]"


def trajectory_rows(step: int, trajectories: Sequence["Trajectory"], limit: int) -> list[list[Any]]:
    """The step's table: one row per trajectory (the first `limit`), columns `TABLE_COLUMNS`."""
    rows = []
    for traj in list(trajectories)[:limit]:
        messages = traj.messages
        first_reply = next((i for i, m in enumerate(messages) if m.get("role") == "assistant"), len(messages))
        prompt = "\n".join(f"[{m.get('role')}] {_text(m.get('content'))}" for m in messages[:first_reply])
        response = "\n".join(f"[{m.get('role')}] {_text(m.get('content'))}" for m in messages[first_reply:])
        turns = sum(1 for m in messages if m.get("role") == "assistant")
        rows.append([step, traj.uid, traj.group_id, float(traj.reward), traj.num_tool_calls, turns,
                     len(traj.response_ids), traj.finish_reason, traj.error or "", _cut(prompt, _PROMPT_CHARS),
                     _cut(response, _RESPONSE_CHARS)])
    return rows


class Backend(Protocol):
    """One place metrics go. `log_config` once at the start, then per step `log` and `log_table`; `close` at the end."""

    def log_config(self, config: Mapping[str, Any]) -> None: ...

    def log(self, step: int, metrics: Mapping[str, Any]) -> None: ...

    def log_table(self, step: int, columns: Sequence[str], rows: list[list[Any]]) -> None: ...

    def close(self) -> None: ...


class _JsonlBackend:
    def __init__(self, run_dir: Path):
        self.path = run_dir / METRICS_FILE
        self.run_dir = run_dir
        self._file = self.path.open("a")

    def resume_at(self, step: int) -> None:
        """Drop records of steps after `step` (logged before a kill, then undone by resuming an older checkpoint)
        and a line torn by the kill, so no step appears twice."""
        self._file.close()
        lines = self.path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if (found := _step_of(line)) is not None and found <= step]
        if len(kept) != len(lines):
            from agentgym.trainer.checkpoints import atomic_write_text

            atomic_write_text(self.path, "".join(kept))
        self._file = self.path.open("a")

    def log_config(self, config: Mapping[str, Any]) -> None:
        (self.run_dir / "run_config.json").write_text(json.dumps(config, indent=1, default=str) + "\n")

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        record = {"step": step, **{k: _jsonable(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def log_table(self, step: int, columns: Sequence[str], rows: list[list[Any]]) -> None:
        return None  # trainer.rollout_data_dir keeps whole trajectories; the table would repeat them

    def close(self) -> None:
        self._file.close()


class _TensorBoardBackend:
    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log_config(self, config: Mapping[str, Any]) -> None:
        self._writer.add_text("config", "```\n" + json.dumps(config, indent=1, default=str) + "\n```", 0)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        for key, value in _scalars(metrics).items():
            self._writer.add_scalar(key, value, step)

    def log_table(self, step: int, columns: Sequence[str], rows: list[list[Any]]) -> None:
        if not rows:
            return
        head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
        body = "".join("| " + " | ".join(str(c).replace("\n", "<br>").replace("|", "\\|") for c in row) + " |\n"
                       for row in rows)
        self._writer.add_text("trajectories", head + body, step)

    def close(self) -> None:
        self._writer.close()


class _WandbBackend:
    """One W&B run per run directory (its id in `wandb_run_id`, so a resumed run continues it). Offline mode writes
    `<run dir>/wandb/offline-run-*`, which `wandb sync <that dir>` uploads later."""

    def __init__(self, run_dir: Path, project: str, experiment: str, settings: "TrackingConfig"):
        import wandb

        id_file = run_dir / "wandb_run_id"
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:12]
        id_file.write_text(run_id + "\n")
        self._wandb = wandb
        self.run = wandb.init(project=project, name=experiment, id=run_id, resume="allow", dir=str(run_dir),
                              entity=settings.wandb_entity, mode=settings.wandb_mode or os.environ.get("WANDB_MODE"),
                              settings=wandb.Settings(console="off", quiet=True), reinit="create_new")

    def log_config(self, config: Mapping[str, Any]) -> None:
        self.run.config.update(dict(config), allow_val_change=True)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        self.run.log(_scalars(metrics), step=step)

    def log_table(self, step: int, columns: Sequence[str], rows: list[list[Any]]) -> None:
        if rows:
            self.run.log({"trajectories": self._wandb.Table(columns=list(columns), data=rows)}, step=step)

    def close(self) -> None:
        self.run.finish()


_MLFLOW_KEY = re.compile(r"[^\w\-./ ]")


class _MlflowBackend:
    """An MLflow run in experiment `project` named `experiment`, through `MlflowClient` (no process-global active
    run). Metric names are kept; a character MLflow refuses in a name becomes `_`."""

    def __init__(self, run_dir: Path, project: str, experiment: str, settings: "TrackingConfig"):
        from mlflow.tracking import MlflowClient

        uri = settings.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        artifacts = None
        if not uri:
            # MLflow 3 refuses new file stores: a SQLite store in the run directory, artifacts next to it (not in
            # the working directory, MLflow's default).
            uri = f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"
            artifacts = (run_dir / "mlartifacts").resolve().as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        self.tracking_uri = uri
        id_file = run_dir / "mlflow_run_id"
        if id_file.exists():
            self.run_id = id_file.read_text().strip()
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            found = self.client.get_experiment_by_name(project)
            experiment_id = (found.experiment_id if found is not None
                             else self.client.create_experiment(project, artifact_location=artifacts))
            self.run_id = self.client.create_run(experiment_id, run_name=experiment).info.run_id
            id_file.write_text(self.run_id + "\n")

    def log_config(self, config: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        self.client.log_dict(self.run_id, dict(config), "config.json")
        flat = _flatten(config)
        params = [Param(k, str(v)[:6000]) for k, v in flat.items()]
        existing = self.client.get_run(self.run_id).data.params
        params = [p for p in params if p.key not in existing]  # a resumed run keeps its first values
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i: i + 100])

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(_MLFLOW_KEY.sub("_", k), v, now, step) for k, v in _scalars(metrics).items()]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[i: i + 1000])

    def log_table(self, step: int, columns: Sequence[str], rows: list[list[Any]]) -> None:
        if rows:
            self.client.log_dict(self.run_id, {"columns": list(columns), "data": rows},
                                 f"trajectories/step_{step:06d}.json")

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


class _ConsoleBackend:
    def __init__(self, total_steps: int | None, start_step: int):
        from agentgym.utils.console import StageProgress, make_console

        self.console = make_console()
        # A bar in a terminal; in a log, a line per 10 % of the steps and a heartbeat while a step runs long.
        self.progress = StageProgress(self.console, "training steps", total_steps).__enter__()
        self.progress.update(start_step)

    def log_config(self, config: Mapping[str, Any]) -> None:
        return None

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        from rich.table import Table

        table = Table(title=f"step {step}", show_header=True, header_style="bold")
        shown = [k for k in _CONSOLE_KEYS if k in metrics]
        for key in shown:
            table.add_column(console_header(key), justify="right")
        table.add_row(*(f"{metrics[k]:.4g}" for k in shown))
        self.console.print(table)
        self.progress.update(step)

    def log_table(self, step: int, columns: Sequence[str], rows: list[list[Any]]) -> None:
        return None

    def close(self) -> None:
        self.progress.__exit__(None, None, None)


def console_header(key: str) -> str:
    """`response_length/mean` -> `response_length` over `mean`: the group on its own line, the name under it, so no
    two columns read alike ("mean" of what, "step" of which time)."""
    group, _, name = key.partition("/")
    return f"{group}\n{name}" if name else group


class MetricsTracker:
    """Writes every step's metrics to each chosen backend; `close()` flushes files and ends the progress bar.

    `for_config` builds one from a run's config (logger list, project and experiment names, tracking settings)
    and logs the config to every backend.
    """

    def __init__(self, run_dir: str | Path, backends: Sequence[str], total_steps: int | None = None,
                 start_step: int = 0, *, project: str = "agentgym", experiment: str = "run",
                 tracking: "TrackingConfig | None" = None) -> None:
        from agentgym.config.schema import TrackingConfig

        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.backends = set(backends)
        unknown = self.backends - set(BACKENDS)
        if unknown:
            raise ConfigError(f"trainer.logger names {sorted(unknown)}, which is not a logger",
                              fix=f"use any of {', '.join(BACKENDS)}")
        self.tracking = tracking or TrackingConfig()
        self._check_installed()
        self._jsonl = _JsonlBackend(self.run_dir) if "jsonl" in self.backends else None
        self._sinks: dict[str, Backend] = {}
        if self._jsonl is not None:
            self._sinks["jsonl"] = self._jsonl
        if "tensorboard" in self.backends:
            try:
                self._sinks["tensorboard"] = _TensorBoardBackend(self.run_dir)
            except ImportError:
                log.warning("trainer.logger lists tensorboard but it is not installed (pip install tensorboard); "
                            "metrics still go to the other loggers")
        if "wandb" in self.backends:
            self._sinks["wandb"] = _WandbBackend(self.run_dir, project, experiment, self.tracking)
        if "mlflow" in self.backends:
            self._sinks["mlflow"] = _MlflowBackend(self.run_dir, project, experiment, self.tracking)
        self._console_sink = _ConsoleBackend(total_steps, start_step) if "console" in self.backends else None
        if self._console_sink is not None:
            self._sinks["console"] = self._console_sink

    @classmethod
    def for_config(cls, run_dir: str | Path, config: "AgentGymConfig", total_steps: int | None = None,
                   start_step: int = 0) -> "MetricsTracker":
        t = config.trainer
        tracker = cls(run_dir, t.logger, total_steps, start_step, project=t.project_name,
                      experiment=t.experiment_name, tracking=t.tracking)
        tracker.log_config(config.model_dump(mode="json"))
        return tracker

    def _check_installed(self) -> None:
        import importlib.util

        for name, module in (("wandb", "wandb"), ("mlflow", "mlflow")):
            if name in self.backends and importlib.util.find_spec(module) is None:
                raise ConfigError(f"trainer.logger lists {name} but the {module} package is not installed",
                                  fix=f"pip install 'agentgym[tracking]' (or {module}), or drop {name} from "
                                      "trainer.logger")

    @property
    def sinks(self) -> Mapping[str, Backend]:
        """The backends in use, by logger name (a test reads the W&B run or MLflow client from here)."""
        return self._sinks

    def resume_at(self, step: int) -> None:
        """The run continues after `step`: records of later steps are dropped so no step appears twice."""
        if self._jsonl is not None:
            self._jsonl.resume_at(step)
        if self._console_sink is not None:
            self._console_sink.progress.update(step)

    def log_config(self, config: Mapping[str, Any]) -> None:
        for sink in self._sinks.values():
            sink.log_config(config)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for sink in self._sinks.values():
            sink.log(step, metrics)

    def log_trajectories(self, step: int, trajectories: Sequence["Trajectory"]) -> None:
        """The step's trajectory table, to the backends that keep tables (W&B, MLflow, TensorBoard)."""
        limit = self.tracking.trajectory_table_rows
        if limit <= 0 or not any(k in self._sinks for k in ("wandb", "mlflow", "tensorboard")):
            return
        rows = trajectory_rows(step, trajectories, limit)
        for sink in self._sinks.values():
            sink.log_table(step, TABLE_COLUMNS, rows)

    def close(self) -> None:
        for name, sink in list(self._sinks.items()):
            try:
                sink.close()
            except Exception:  # one backend failing to flush must not keep the others from closing
                log.exception("closing the %s logger failed", name)
        self._sinks.clear()


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
