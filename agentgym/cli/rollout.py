"""`agentgym rollout --config RUN.yaml [key=value ...]`: collect trajectories for a dataset and summarise them."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table

from agentgym.config.schema import AgentGymConfig
from agentgym.errors import ConfigError
from agentgym.multimodal.processor import load_vision_processor
from agentgym.rollout.agent_loop import AgentLoop
from agentgym.rollout.build import agent_loop_config, check_dataset, load_environment, remote_environment
from agentgym.rollout.engines.registry import make_engine
from agentgym.rollout.trajectory_io import write_jsonl, write_parquet
from agentgym.tools.embedded_sandbox import stop_embedded_sandboxes
from agentgym.tools.sandbox_fusion import aclose_http_sessions
from agentgym.trajectory import Trajectory
from agentgym.utils.console import StageProgress
from agentgym.utils.shutdown import run_until_signal


def tool_errors_by_kind(trajectories: Sequence[Trajectory]) -> Counter[str]:
    """Calls that did not run as the model meant, by kind: parse_error (unreadable call), unknown_tool,
    invalid_arguments (schema), timeout, tool_exception."""
    return Counter(m.get("error_kind") or "other" for t in trajectories for m in t.tool_metrics if m.get("error"))


def summarize(trajectories: Sequence[Trajectory], title: str = "rollout summary") -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    n = max(len(trajectories), 1)
    ok = [t for t in trajectories if not t.failed]
    errors = tool_errors_by_kind(trajectories)
    rows = [
        ("trajectories", str(len(trajectories))),
        ("mean reward", f"{sum(t.reward for t in ok) / max(len(ok), 1):.3f}"),
        ("mean assistant turns", f"{sum(sum(s.role == 'assistant' for s in t.turns) for t in trajectories) / n:.2f}"),
        ("mean tool calls", f"{sum(t.num_tool_calls for t in trajectories) / n:.2f}"),
        ("tool errors", str(sum(errors.values()))),
        *((f"tool errors: {kind}", str(count)) for kind, count in sorted(errors.items())),
        ("failed episodes", str(len(trajectories) - len(ok))),
        ("mean response tokens", f"{sum(len(t.response_ids) for t in trajectories) / n:.1f}"),
    ]
    rows += [(f"finish: {reason}", str(count)) for reason, count in sorted(Counter(t.finish_reason for t in trajectories).items())]
    for name, value in rows:
        table.add_row(name, value)
    return table


async def collect(cfg: AgentGymConfig, rows: Sequence[dict[str, Any]], out_dir: Path, console: Console) -> list[Trajectory]:
    from transformers import AutoTokenizer

    tokenizer_path = cfg.actor_rollout_ref.model.tokenizer_path or cfg.actor_rollout_ref.model.path
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    environment = remote_environment(cfg)
    tools, interactions = load_environment(cfg) if environment is None else ({}, {})
    n = cfg.actor_rollout_ref.rollout.n
    try:
        async with make_engine(cfg) as engine:  # an engine that launched servers stops them, Ctrl-C included
            loop = AgentLoop(engine, tokenizer, tools, interactions, agent_loop_config(cfg, seed=cfg.data.seed),
                             processor=load_vision_processor(cfg.actor_rollout_ref.model.path), environment=environment)
            with StageProgress(console, "rollout episodes", len(rows) * n) as progress:
                trajectories = await loop.run_batch(rows, n=n, on_done=lambda _: progress.advance())
    finally:
        if environment is not None:
            await environment.aclose()
        await aclose_http_sessions()
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(trajectories, out_dir / "trajectories.jsonl")
    write_parquet(trajectories, out_dir / "trajectories.parquet")
    console.print(summarize(trajectories))
    console.print(f"wrote {out_dir / 'trajectories.jsonl'} and {out_dir / 'trajectories.parquet'}")
    return trajectories


def run_rollout_command(config_path: str | None, overrides: Sequence[str], out_dir: Path, console: Console) -> int:
    from agentgym.config import load_config
    from agentgym.models.local_path import check_model_path
    from agentgym.rows import read_rows

    cfg = load_config(config_path, overrides)
    check_model_path(cfg.actor_rollout_ref.model.path)
    if cfg.actor_rollout_ref.model.tokenizer_path:
        check_model_path(cfg.actor_rollout_ref.model.tokenizer_path, entry="actor_rollout_ref.model.tokenizer_path")
    files = cfg.data.val_files or cfg.data.train_files
    if not files:
        raise ConfigError("no dataset to roll out.", entry="data.train_files",
                          fix="set data.train_files (or data.val_files) to a .parquet or .jsonl file")
    rows = read_rows(files, prompt_key=cfg.data.prompt_key, check_prompts=False)
    check_dataset(cfg, rows, console, source=", ".join([files] if isinstance(files, str) else files))
    trajectories = run_until_signal(collect(cfg, rows, out_dir, console), what="the rollout",
                                    on_interrupt=[stop_embedded_sandboxes])
    return 0 if any(not t.failed for t in trajectories) else 1
