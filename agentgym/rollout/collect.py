"""`agentgym rollout --config RUN.yaml [key=value ...]`: collect trajectories for a dataset and summarise them.

Also the one place that turns a run config into an engine and an agent loop, so the trainer's main job, the
quickstart and this command build them the same way.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agentgym.config.schema import AgentGymConfig
from agentgym.env.episode import EpisodeLimits
from agentgym.env.session import SessionConfig
from agentgym.errors import ConfigError
from agentgym.interactions.registry import load_interactions
from agentgym.rollout.agent_loop import AgentLoop, AgentLoopConfig
from agentgym.rollout.engines.base import SamplingParams
from agentgym.rollout.trajectory import Trajectory
from agentgym.rollout.trajectory_io import write_jsonl, write_parquet
from agentgym.tools.registry import build_tools, load_tool_specs
from agentgym.tools.sandbox_fusion import aclose_http_sessions


def agent_loop_config(cfg: AgentGymConfig, *, temperature: float | None = None, seed: int | None = None) -> AgentLoopConfig:
    rollout = cfg.actor_rollout_ref.rollout
    mt = rollout.multi_turn
    limits = EpisodeLimits(
        max_assistant_turns=mt.max_assistant_turns or 8,
        max_user_turns=mt.max_user_turns or 4,
        max_tool_response_chars=mt.max_tool_response_length,
        tool_response_truncate_side=mt.tool_response_truncate_side,
    )
    sampling = SamplingParams(
        max_new_tokens=cfg.data.max_response_length,
        temperature=(rollout.temperature if rollout.do_sample else 0.0) if temperature is None else temperature,
        top_p=rollout.top_p,
        top_k=rollout.top_k,
        seed=seed,
    )
    return AgentLoopConfig(
        limits=limits,
        sampling=sampling,
        max_response_tokens=cfg.data.max_response_length,
        max_prompt_tokens=cfg.data.max_prompt_length,
        parser=mt.format,
        max_concurrent_episodes=rollout.max_num_seqs,
        tool_schemas_in_prompt=mt.tool_schemas_in_prompt,
        session=SessionConfig(max_parallel_calls=mt.max_parallel_calls),
    )


def load_environment(cfg: AgentGymConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Tools and interactions named by `actor_rollout_ref.rollout.multi_turn.{tool,interaction}_config_path`."""
    mt = cfg.actor_rollout_ref.rollout.multi_turn
    tools = build_tools(load_tool_specs(mt.tool_config_path)) if mt.tool_config_path else {}
    interactions = load_interactions(mt.interaction_config_path) if mt.interaction_config_path else {}
    return tools, interactions


def transformers_engine_config(cfg: AgentGymConfig) -> Any:
    """The in-process engine runs where the trainer runs: on CUDA in `rollout.dtype` with torch's own threading, on
    CPU in fp32 on one thread; `rollout.engine_kwargs.transformers` overrides any field."""
    import dataclasses

    from agentgym.rollout.engines.transformers_engine import TransformersEngineConfig
    from agentgym.trainer.workers.model import resolve_dtype
    from agentgym.trainer.workers.worker import device_type

    rollout = cfg.actor_rollout_ref.rollout
    kwargs = dict(rollout.engine_kwargs.get("transformers") or {})
    fields = {f.name for f in dataclasses.fields(TransformersEngineConfig)}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise ConfigError(f"unknown transformers engine option(s) {unknown}.",
                          entry="actor_rollout_ref.rollout.engine_kwargs.transformers",
                          fix=f"use only {sorted(fields)}")
    kwargs.setdefault("device", device_type(cfg.trainer.device))
    if kwargs["device"] != "cpu":
        kwargs.setdefault("dtype", str(resolve_dtype(rollout.dtype)).removeprefix("torch."))
        kwargs.setdefault("intra_op_threads", None)
    return TransformersEngineConfig(**kwargs)


def make_engine(cfg: AgentGymConfig) -> Any:
    rollout = cfg.actor_rollout_ref.rollout
    model_path = cfg.actor_rollout_ref.model.path
    if rollout.name == "transformers":
        from agentgym.rollout.engines.transformers_engine import TransformersEngine

        if not model_path:
            raise ConfigError("no model to serve.", entry="actor_rollout_ref.model.path", fix="set it to a local HF model directory")
        return TransformersEngine(model_path, transformers_engine_config(cfg))
    if rollout.name == "sglang":
        from agentgym.rollout.engines.sglang_engine import SGLangEngine, SGLangEngineConfig

        kwargs = dict(rollout.engine_kwargs.get("sglang") or {})
        if not kwargs.get("urls"):
            raise ConfigError(
                "the SGLang engine needs its server URLs.",
                entry="actor_rollout_ref.rollout.engine_kwargs.sglang.urls",
                fix="set it to a list such as ['http://127.0.0.1:30000']",
            )
        kwargs.setdefault("model_path", model_path)
        return SGLangEngine(SGLangEngineConfig(**kwargs))
    raise ConfigError(
        f"unknown rollout engine `{rollout.name}`.", entry="actor_rollout_ref.rollout.name", fix="use `transformers` or `sglang`"
    )


def summarize(trajectories: Sequence[Trajectory], title: str = "rollout summary") -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    n = max(len(trajectories), 1)
    ok = [t for t in trajectories if not t.failed]
    rows = [
        ("trajectories", str(len(trajectories))),
        ("mean reward", f"{sum(t.reward for t in ok) / max(len(ok), 1):.3f}"),
        ("mean assistant turns", f"{sum(sum(s.role == 'assistant' for s in t.turns) for t in trajectories) / n:.2f}"),
        ("mean tool calls", f"{sum(t.num_tool_calls for t in trajectories) / n:.2f}"),
        ("tool errors", str(sum(1 for t in trajectories for m in t.tool_metrics if m.get("error")))),
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
    tools, interactions = load_environment(cfg)
    n = cfg.actor_rollout_ref.rollout.n
    async with make_engine(cfg) as engine:
        loop = AgentLoop(engine, tokenizer, tools, interactions, agent_loop_config(cfg, seed=cfg.data.seed))
        columns = (TextColumn("rollout"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("rollout", total=len(rows) * n)
            trajectories = await loop.run_batch(rows, n=n, on_done=lambda _: progress.advance(task))
    await aclose_http_sessions()
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(trajectories, out_dir / "trajectories.jsonl")
    write_parquet(trajectories, out_dir / "trajectories.parquet")
    console.print(summarize(trajectories))
    console.print(f"wrote {out_dir / 'trajectories.jsonl'} and {out_dir / 'trajectories.parquet'}")
    return trajectories


def run_rollout_command(config_path: str | None, overrides: Sequence[str], out_dir: Path, console: Console) -> int:
    from agentgym.config import load_config
    from agentgym.trainer.data import read_rows

    cfg = load_config(config_path, overrides)
    files = cfg.data.val_files or cfg.data.train_files
    if not files:
        raise ConfigError("no dataset to roll out.", entry="data.train_files", fix="set data.train_files (or data.val_files) to a .parquet or .jsonl file")
    trajectories = asyncio.run(collect(cfg, read_rows(files, prompt_key=cfg.data.prompt_key), out_dir, console))
    return 0 if any(not t.failed for t in trajectories) else 1


class _StartedOnFirstUse:
    """The engine as the trainer sees it: started inside the trainer's event loop by whichever comes first,
    the initial weight sync or the first collection."""

    def __init__(self, engine: Any):
        self.engine = engine
        self._lock: asyncio.Lock | None = None
        self._started = False

    async def ensure_started(self) -> Any:
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if not self._started:
                await self.engine.start()
                self._started = True
        return self.engine

    async def update_weights(self, state_dict: Any = None, *, path: str | None = None) -> None:
        await (await self.ensure_started()).update_weights(state_dict, path=path)


def make_rollout(cfg: AgentGymConfig) -> tuple[Any, Any]:
    """The trainer's default rollout side: `(collect(rows, step), engine)` from the run config.

    `actor_rollout_ref.rollout.n` samples per row form one group, and group ids are fixed by the step so a seeded
    run repeats.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cfg.actor_rollout_ref.model.tokenizer_path or cfg.actor_rollout_ref.model.path)
    tools, interactions = load_environment(cfg)
    engine = _StartedOnFirstUse(make_engine(cfg))
    loop = AgentLoop(engine.engine, tokenizer, tools, interactions, agent_loop_config(cfg, seed=cfg.data.seed))

    async def collect(rows: list[dict[str, Any]], step: int) -> list[Trajectory]:
        await engine.ensure_started()
        return await loop.run_batch(rows, n=cfg.actor_rollout_ref.rollout.n, group_prefix=f"step{step}-")

    return collect, engine
