"""`agentgym rollout --config RUN.yaml [key=value ...]`: collect trajectories for a dataset and summarise them.

Also the one place that turns a run config into an engine and an agent loop, so the trainer's main job, the
quickstart and this command build them the same way.
"""

from __future__ import annotations

import asyncio
import logging
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
from agentgym.env.row_check import Registered, format_problems, require_valid_rows
from agentgym.multimodal.processor import load_vision_processor
from agentgym.interactions.registry import load_interactions, read_interaction_entries
from agentgym.rollout.agent_loop import AgentLoop, AgentLoopConfig
from agentgym.rollout.engines.base import SamplingParams
from agentgym.rollout.trajectory import Trajectory
from agentgym.rollout.trajectory_io import write_jsonl, write_parquet
from agentgym.tools.function_tool import load_function_tools
from agentgym.tools.mcp_tool import mcp_tool_names
from agentgym.tools.registry import load_all_tools, load_mcp_entries, load_tool_specs
from agentgym.tools.sandbox_fusion import aclose_http_sessions

logger = logging.getLogger(__name__)


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
        image_key=cfg.data.image_key,
        session=SessionConfig(tool_instance_lifetime=mt.tool_instance_lifetime, max_parallel_calls=mt.max_parallel_calls),
    )


def load_environment(cfg: AgentGymConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Tools and interactions named by `actor_rollout_ref.rollout.multi_turn.{tool,interaction}_config_path` and
    `multi_turn.function_tool_path`."""
    mt = cfg.actor_rollout_ref.rollout.multi_turn
    tools = load_all_tools(mt.tool_config_path, mt.function_tool_path)
    interactions = load_interactions(mt.interaction_config_path) if mt.interaction_config_path else {}
    return tools, interactions


def registered_names(cfg: AgentGymConfig) -> Registered:
    """The tool and interaction names the run config registers, without building them (for the data check)."""
    mt = cfg.actor_rollout_ref.rollout.multi_turn
    tools = [spec.name for spec in load_tool_specs(mt.tool_config_path)] if mt.tool_config_path else []
    for entry in load_mcp_entries(mt.tool_config_path) if mt.tool_config_path else []:
        tools += mcp_tool_names(entry)
    if mt.function_tool_path:
        tools += list(load_function_tools(mt.function_tool_path))
    interactions = [e.name for e in read_interaction_entries(mt.interaction_config_path)] if mt.interaction_config_path else []
    return Registered.of(tools, interactions)


def check_dataset(cfg: AgentGymConfig, rows: Sequence[dict[str, Any]], console: Console | None = None, *,
                  registered: Registered | None = None, source: str = "the dataset") -> None:
    """Stop before the first rollout when rows would fail in it; show the warnings."""
    warnings = require_valid_rows(rows, registered or registered_names(cfg), prompt_key=cfg.data.prompt_key, source=source,
                                  image_key=cfg.data.image_key)
    if warnings:
        text = format_problems(warnings, source=source)
        if console is not None:
            console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            logger.warning("%s", text)


def transformers_engine_config(cfg: AgentGymConfig) -> Any:
    """The in-process engine's config. It runs where the trainer runs: on CUDA the paged engine in
    `rollout.dtype` (KV cache sized by `rollout.gpu_memory_utilization`, batch by `rollout.max_num_seqs`, context
    by `rollout.max_model_len` or the data's prompt + response lengths), on CPU the dynamic-cache engine in fp32
    on one thread. `rollout.engine_kwargs.transformers` overrides any field; its `backend` key (`auto`, `paged`,
    `dynamic`) picks the engine."""
    import dataclasses

    from agentgym.rollout.engines.paged import PagedEngineConfig
    from agentgym.rollout.engines.transformers_engine import TransformersEngineConfig
    from agentgym.devices import device_type, resolve_dtype

    rollout = cfg.actor_rollout_ref.rollout
    entry = "actor_rollout_ref.rollout.engine_kwargs.transformers"
    kwargs = dict(rollout.engine_kwargs.get("transformers") or {})
    backend = kwargs.pop("backend", "auto")
    kwargs.setdefault("device", device_type(cfg.trainer.device))
    if backend == "auto":
        backend = "dynamic" if kwargs["device"] == "cpu" else "paged"
    if backend not in ("paged", "dynamic"):
        raise ConfigError(f"unknown in-process engine backend `{backend}`.", entry=f"{entry}.backend",
                          fix="use `auto` (paged on CUDA, dynamic on CPU), `paged` or `dynamic`")
    config_cls = PagedEngineConfig if backend == "paged" else TransformersEngineConfig
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise ConfigError(f"unknown {backend} engine option(s) {unknown}.", entry=entry,
                          fix=f"use only {sorted(fields | {'backend'})}")
    if kwargs["device"] != "cpu":
        kwargs.setdefault("dtype", str(resolve_dtype(rollout.dtype)).removeprefix("torch."))
        kwargs.setdefault("intra_op_threads", None)
    else:
        kwargs.setdefault("dtype", "float32")
        kwargs.setdefault("intra_op_threads", 1)
    if backend == "paged":
        kwargs.setdefault("gpu_memory_utilization", rollout.gpu_memory_utilization)
        kwargs.setdefault("max_batch_size", rollout.max_num_seqs)
        kwargs.setdefault("max_model_len", rollout.max_model_len or cfg.data.max_prompt_length + cfg.data.max_response_length)
    return config_cls(**kwargs)


def make_engine(cfg: AgentGymConfig) -> Any:
    rollout = cfg.actor_rollout_ref.rollout
    model_path = cfg.actor_rollout_ref.model.path
    if rollout.name == "transformers":
        from agentgym.rollout.engines.paged import PagedEngine, PagedEngineConfig
        from agentgym.rollout.engines.transformers_engine import TransformersEngine

        if not model_path:
            raise ConfigError("no model to serve.", entry="actor_rollout_ref.model.path", fix="set it to a local HF model directory")
        engine_config = transformers_engine_config(cfg)
        if isinstance(engine_config, PagedEngineConfig):
            return PagedEngine(model_path, engine_config)
        return TransformersEngine(model_path, engine_config)
    if rollout.name == "sglang":
        from agentgym.rollout.engines.server_engines import make_sglang_engine

        return make_sglang_engine(cfg)
    if rollout.name == "vllm":
        from agentgym.rollout.engines.server_engines import make_vllm_engine

        return make_vllm_engine(cfg)
    raise ConfigError(
        f"unknown rollout engine `{rollout.name}`.", entry="actor_rollout_ref.rollout.name",
        fix="use `transformers`, `sglang` or `vllm`",
    )


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
    tools, interactions = load_environment(cfg)
    n = cfg.actor_rollout_ref.rollout.n
    async with make_engine(cfg) as engine:
        loop = AgentLoop(engine, tokenizer, tools, interactions, agent_loop_config(cfg, seed=cfg.data.seed),
                         processor=load_vision_processor(cfg.actor_rollout_ref.model.path))
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
    from agentgym.models.local_path import check_model_path
    from agentgym.rows import read_rows

    cfg = load_config(config_path, overrides)
    check_model_path(cfg.actor_rollout_ref.model.path)
    if cfg.actor_rollout_ref.model.tokenizer_path:
        check_model_path(cfg.actor_rollout_ref.model.tokenizer_path, entry="actor_rollout_ref.model.tokenizer_path")
    files = cfg.data.val_files or cfg.data.train_files
    if not files:
        raise ConfigError("no dataset to roll out.", entry="data.train_files", fix="set data.train_files (or data.val_files) to a .parquet or .jsonl file")
    rows = read_rows(files, prompt_key=cfg.data.prompt_key, check_prompts=False)
    check_dataset(cfg, rows, console, source=", ".join([files] if isinstance(files, str) else files))
    trajectories = asyncio.run(collect(cfg, rows, out_dir, console))
    return 0 if any(not t.failed for t in trajectories) else 1


def engine_counters(stats: Any) -> dict[str, float]:
    """The cumulative counters an engine's stats carry, under one set of names (HTTP engines count prompt
    tokens, which are their context tokens)."""
    if stats is None:
        return {}
    names = {"context_tokens": ("context_tokens", "prompt_tokens"), "cached_tokens": ("cached_tokens",),
             "prefilled_tokens": ("prefilled_tokens",), "generated_tokens": ("tokens_generated", "completion_tokens"),
             "preemptions": ("preemptions",)}
    out = {}
    for name, candidates in names.items():
        for attr in candidates:
            value = getattr(stats, attr, None)
            if isinstance(value, (int, float)):
                out[name] = float(value)
                break
    return out


class _StartedOnFirstUse:
    """The engine as the trainer sees it: started inside the trainer's event loop by whichever comes first,
    the initial weight sync or the first collection."""

    def __init__(self, engine: Any):
        self.engine = engine
        self._lock: asyncio.Lock | None = None
        self._started = False
        self._counters: dict[str, float] = {}

    async def ensure_started(self) -> Any:
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if not self._started:
                await self.engine.start()
                self._started = True
        return self.engine

    async def update_weights(self, state_dict: Any = None, *, path: str | None = None) -> None:
        await (await self.ensure_started()).update_weights(state_dict, path=path)

    def step_metrics(self) -> dict[str, float]:
        """What the engine did since the last call, as `rollout/engine/*` metrics: context tokens (what a
        cache-less engine would prefill), cached and prefilled tokens, the prefix-cache hit rate, preemptions."""
        now = engine_counters(getattr(self.engine, "stats", None))
        before, self._counters = self._counters, now
        delta = {k: v - before.get(k, 0.0) for k, v in now.items()}
        out = {f"rollout/engine/{k}": v for k, v in delta.items()}
        if delta.get("context_tokens"):
            out["rollout/engine/prefix_cache_hit_rate"] = delta.get("cached_tokens", 0.0) / delta["context_tokens"]
        return out

    async def close(self) -> None:
        """Close the engine if it was started (an engine that launched its servers stops them)."""
        if self._started:
            self._started = False
            await self.engine.close()


def make_rollout(cfg: AgentGymConfig) -> tuple[Any, Any]:
    """The trainer's default rollout side: `(collect(rows, step), engine)` from the run config.

    `actor_rollout_ref.rollout.n` samples per row form one group, and group ids are fixed by the step so a seeded
    run repeats. `on_done(trajectory)` is called as each episode ends (asynchronous reward scoring).
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cfg.actor_rollout_ref.model.tokenizer_path or cfg.actor_rollout_ref.model.path)
    tools, interactions = load_environment(cfg)
    engine = _StartedOnFirstUse(make_engine(cfg))
    processor = load_vision_processor(cfg.actor_rollout_ref.model.path)
    loop = AgentLoop(engine.engine, tokenizer, tools, interactions, agent_loop_config(cfg, seed=cfg.data.seed),
                     processor=processor)
    greedy_loop = AgentLoop(engine.engine, tokenizer, tools, interactions, agent_loop_config(cfg, temperature=0.0),
                            processor=processor)

    async def collect(rows: list[dict[str, Any]], step: int, on_done: Any = None, *,
                      greedy: bool = False) -> list[Trajectory]:
        """`greedy`: one temperature-0 response per row instead (ReMax's baseline), in the rows' order."""
        await engine.ensure_started()
        if greedy:
            return await greedy_loop.run_batch(rows, n=1, group_prefix=f"step{step}-greedy-")
        return await loop.run_batch(rows, n=cfg.actor_rollout_ref.rollout.n, group_prefix=f"step{step}-",
                                    on_done=on_done)

    return collect, engine
