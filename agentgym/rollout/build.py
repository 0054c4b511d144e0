"""The one place a run config becomes a rollout: tools and interactions, the agent loop's settings, the engine, and
the `Rollout` the trainer drives. The trainer's main job, the quickstart and `agentgym rollout` all build them here,
so they build them the same way.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, NamedTuple, Sequence

from rich.console import Console

from agentgym.config.schema import AgentGymConfig
from agentgym.errors import ConfigError
from agentgym.episode.environment import Environment
from agentgym.episode.episode import EpisodeLimits
from agentgym.episode.remote import RemoteEnvironment
from agentgym.episode.session import SessionConfig
from agentgym.interactions.registry import load_interactions, read_interaction_entries
from agentgym.multimodal.processor import load_vision_processor
from agentgym.rollout.agent_loop import AgentLoop, AgentLoopConfig, plan_episodes
from agentgym.rollout.engines.base import Engine, SamplingParams
from agentgym.rollout.engines.registry import make_engine
from agentgym.rollout.policy_version import PolicyVersionGate
from agentgym.rollout.protocol import OnDone
from agentgym.rollout.replicas import RemoteEngine, ReplicaRouter
from agentgym.rows.check import Registered, format_problems, require_valid_rows
from agentgym.tools.function_tool import load_function_tools
from agentgym.tools.mcp_tool import mcp_tool_names
from agentgym.tools.sandbox_fusion import aclose_http_sessions
from agentgym.tools.registry import load_all_tools, load_mcp_entries, load_tool_specs
from agentgym.trajectory import Trajectory

if TYPE_CHECKING:
    from agentgym.rollout.agent_workers import AgentWorkerPool

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
        partial_rollout_tokens=cfg.trainer.partial_rollout_tokens if cfg.trainer.partial_rollout else None,
        session=SessionConfig(tool_instance_lifetime=mt.tool_instance_lifetime, max_parallel_calls=mt.max_parallel_calls),
    )


def load_environment(cfg: AgentGymConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Tools and interactions named by `actor_rollout_ref.rollout.multi_turn.{tool,interaction}_config_path` and
    `multi_turn.function_tool_path`."""
    mt = cfg.actor_rollout_ref.rollout.multi_turn
    tools = load_all_tools(mt.tool_config_path, mt.function_tool_path)
    interactions = load_interactions(mt.interaction_config_path) if mt.interaction_config_path else {}
    return tools, interactions


def remote_environment(cfg: AgentGymConfig) -> RemoteEnvironment | None:
    """The environment server `multi_turn.environment_url` names (its tool schemas read), or None."""
    url = cfg.actor_rollout_ref.rollout.multi_turn.environment_url
    return RemoteEnvironment.connect(url) if url else None


def registered_names(cfg: AgentGymConfig) -> Registered:
    """The tool and interaction names the run config registers, without building them (for the data check); with
    `multi_turn.environment_url`, the ones that environment server serves."""
    mt = cfg.actor_rollout_ref.rollout.multi_turn
    if mt.environment_url:
        info = RemoteEnvironment.connect(mt.environment_url).info
        return Registered.of([schema.function.name for schema in info.tools], info.interactions)
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


class AgentLoopRollout:
    """The default `Rollout`: the config's agent loop over one engine, or over the engine replicas the trainer ranks
    host (`rollout.placement=colocated`: the trainer passes their handles to `start`).

    An own engine is started inside the trainer's event loop by whichever comes first, the initial weight sync or
    the first collection. `actor_rollout_ref.rollout.n` samples per row form one group, and group ids are fixed by
    the step so a seeded run repeats. With replicas and `rollout.agent.num_workers > 1` the episodes run in that
    many agent-worker Ray actors (`agentgym.rollout.agent_workers`) instead of the driver's event loop, with the
    same ids and the same trajectories.
    """

    samples_greedy = True
    reports_done = True

    def __init__(self, cfg: AgentGymConfig, engine: Engine | None, tokenizer: Any, tools: dict[str, Any],
                 interactions: dict[str, Any], processor: Any = None, environment: Environment | None = None):
        """`environment`: where sessions come from instead of `tools` and `interactions` (an environment server)."""
        self.cfg = cfg
        self.environment = environment
        self.n = cfg.actor_rollout_ref.rollout.n
        self._parts = (tokenizer, tools, interactions, processor)
        self.replicas: list[Any] = []
        self.workers: AgentWorkerPool | None = None  # rollout.agent.num_workers > 1 over replicas
        self._lock: asyncio.Lock | None = None
        self._started = False
        self._counters: dict[str, float] = {}
        self.gate = PolicyVersionGate()  # the policy version of each engine call, paused by weight syncs
        self._scratch_dir: str | None = None  # a separate pool's servers: the disk path's folder made for the run
        self._use(engine)

    def _use(self, engine: Engine | None) -> None:
        self.engine = engine
        if engine is None:
            return
        self.loop, self.greedy_loop = agent_loops(self.cfg, engine, *self._parts, environment=self.environment,
                                                  gate=self.gate)

    def weight_sync(self, version: int) -> AbstractAsyncContextManager[None]:
        """Around the trainer's weight sync: the episodes' engine calls under way finish on the old weights, new
        ones wait, and resume at `version` once the body has swapped the weights."""
        return self.gate.weight_sync(version)

    async def start(self, replicas: Sequence[Any] = ()) -> None:
        num_workers = self.cfg.actor_rollout_ref.rollout.agent.num_workers
        if num_workers > 1 and not replicas:
            raise ConfigError(
                f"rollout.agent.num_workers={num_workers} runs the episodes in agent-worker Ray actors that call the "
                "engine replicas the trainer ranks host, but this rollout has its own engine in the driver.",
                entry="actor_rollout_ref.rollout.agent.num_workers",
                fix="set actor_rollout_ref.rollout.placement=colocated or separate (with trainer.use_ray=true), or "
                    "num_workers=1")
        if replicas and self.cfg.actor_rollout_ref.rollout.name in ("sglang", "vllm"):
            await self._use_pool_servers(replicas, num_workers)
        elif replicas:
            self.replicas = list(replicas)
            if num_workers > 1:
                from agentgym.rollout.agent_workers import AgentWorkerPool

                self.workers = AgentWorkerPool(self.cfg, self.replicas, num_workers)
                await self.workers.start()
            else:
                self._use(ReplicaRouter([RemoteEngine(h, f"rank {i}'s replica") for i, h in enumerate(self.replicas)]))
            self._started = True
        elif self.engine is None:
            raise ConfigError("the rollout has no engine: with rollout.placement=colocated the trainer ranks host "
                              "the replicas, and none were given.", entry="actor_rollout_ref.rollout.placement",
                              fix="run it through RLTrainer with trainer.use_ray=true, or set placement=driver")
        else:
            await self.ensure_started()

    async def _use_pool_servers(self, actors: Sequence[Any], num_workers: int) -> None:
        """A separate rollout pool whose actors launched SGLang/vLLM servers: this rollout's own HTTP engine over
        the URLs they report (the actors own the servers; closing the engine stops none)."""
        if num_workers > 1:
            raise ConfigError(f"rollout.agent.num_workers={num_workers} is built for in-process replicas; the servers "
                              "of a separate pool are called over HTTP from the driver's event loop.",
                              entry="actor_rollout_ref.rollout.agent.num_workers", fix="set it to 1")
        from agentgym.rollout.engines.servers.server_engines import make_server_engine

        urls = list(await asyncio.gather(*(a.server_url.remote() for a in actors)))
        engine = make_server_engine(self.cfg, urls)
        name = self.cfg.actor_rollout_ref.rollout.name
        if not (self.cfg.actor_rollout_ref.rollout.engine_kwargs.get(name) or {}).get("weight_sync_dir"):
            self._scratch_dir = engine.config.weight_sync_dir  # made for this run's disk path: removed at close
        self._use(engine)
        await self.ensure_started()

    async def ensure_started(self) -> Engine:
        if self.engine is None:
            raise RuntimeError("AgentLoopRollout.start(replicas) was not called: the colocated rollout has no engine yet")
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if not self._started:
                await self.engine.start()
                self._started = True
        return self.engine

    async def collect(self, rows: list[dict[str, Any]], step: int, *, greedy: bool = False,
                      on_done: OnDone | None = None) -> list[Trajectory]:
        if self.workers is not None:
            # The same episodes (and ids) as the one-loop path below, run by the agent workers.
            if greedy:
                return await self.workers.run(plan_episodes(rows, n=1, group_prefix=f"step{step}-greedy-"), greedy=True)
            return await self.workers.run(plan_episodes(rows, n=self.n, group_prefix=f"step{step}-"), on_done=on_done)
        await self.ensure_started()
        if greedy:
            return await self.greedy_loop.run_batch(rows, n=1, group_prefix=f"step{step}-greedy-")
        return await self.loop.run_batch(rows, n=self.n, group_prefix=f"step{step}-", on_done=on_done)

    async def update_weights(self, state_dict: Any = None, *, path: str | None = None) -> None:
        if self.replicas:
            raise RuntimeError("replicas are synced by the trainer: colocated ones inside their ranks "
                               "(TrainWorker.sync_replica), a separate pool by broadcast (workers.rollout_pool)")
        await (await self.ensure_started()).update_weights(state_dict, path=path)

    async def step_metrics(self) -> dict[str, float]:
        """What the engines did since the last call, as `rollout/engine/*` metrics: context tokens (what a
        cache-less engine would prefill), cached and prefilled tokens, the prefix-cache hit rate, preemptions;
        summed over the replicas when there are several."""
        if self.replicas:
            now: dict[str, float] = {}
            for counters in await asyncio.gather(*(h.replica_counters.remote() for h in self.replicas)):
                for k, v in counters.items():
                    now[k] = now.get(k, 0.0) + v
        elif self.engine is not None and self._started:
            now = self.engine.stats.counters()
        else:
            return {}
        before, self._counters = self._counters, now
        delta = {k: v - before.get(k, 0.0) for k, v in now.items()}
        out = {f"rollout/engine/{k}": v for k, v in delta.items()}
        if delta.get("context_tokens"):
            out["rollout/engine/prefix_cache_hit_rate"] = delta.get("cached_tokens", 0.0) / delta["context_tokens"]
        if self.workers is not None:
            requests = await self.workers.take_requests()
            out.update({f"rollout/replica_{i}/requests": float(n) for i, n in sorted(requests.items())})
            out.update(self.workers.take_metrics())
        elif self.router is not None:
            out.update({f"rollout/replica_{i}/requests": float(n) for i, n in sorted(self.router.requests.items())})
            self.router.requests.clear()
        return out

    @property
    def router(self) -> ReplicaRouter | None:
        return self.engine if isinstance(self.engine, ReplicaRouter) else None

    async def close(self) -> None:
        """Close the engine if it was started here (an engine that launched its servers stops them), stop the
        agent workers, and close the HTTP connections this event loop's episodes opened (the tools' pooled
        sandbox/search sessions, an environment server's), so none is left for aiohttp to warn about."""
        if self.workers is not None:
            self.workers.close()
            self.workers = None
        try:
            if self._started and not self.replicas and self.engine is not None:
                self._started = False
                await self.engine.close()
        finally:
            if self._scratch_dir is not None:
                shutil.rmtree(self._scratch_dir, ignore_errors=True)
                self._scratch_dir = None
            if isinstance(self.environment, RemoteEnvironment):
                await self.environment.aclose()
            await aclose_http_sessions()


class RolloutParts(NamedTuple):
    """What an agent loop needs besides its engine (in `AgentLoopRollout`'s and `agent_loops`' argument order)."""

    tokenizer: Any
    tools: dict[str, Any]
    interactions: dict[str, Any]
    processor: Any  # None for a text model
    environment: Environment | None  # an environment server's sessions instead of local tools and interactions


def rollout_parts(cfg: AgentGymConfig) -> RolloutParts:
    """What an agent loop needs besides its engine, from the run config. The driver and every agent worker build
    their own from the same config (each its own tool instances and clients), so they build the same ones."""
    from transformers import AutoTokenizer

    model = cfg.actor_rollout_ref.model
    tokenizer = AutoTokenizer.from_pretrained(model.tokenizer_path or model.path)
    environment = remote_environment(cfg)  # set: the tools and interactions live on an environment server
    tools, interactions = load_environment(cfg) if environment is None else ({}, {})
    return RolloutParts(tokenizer, tools, interactions, load_vision_processor(model.path), environment)


def agent_loops(cfg: AgentGymConfig, engine: Engine, tokenizer: Any, tools: dict[str, Any],
                interactions: dict[str, Any], processor: Any = None,
                environment: Environment | None = None,
                gate: PolicyVersionGate | None = None) -> tuple[AgentLoop, AgentLoop]:
    """The run's two agent loops over `engine`: the sampling one (seeded by `data.seed`) and the greedy one
    (temperature 0: estimators whose baseline is the greedy response), sharing one policy-version gate."""
    gate = gate if gate is not None else PolicyVersionGate()
    loop = AgentLoop(engine, tokenizer, tools, interactions, agent_loop_config(cfg, seed=cfg.data.seed),
                     processor=processor, environment=environment, gate=gate)
    greedy = AgentLoop(engine, tokenizer, tools, interactions, agent_loop_config(cfg, temperature=0.0),
                       processor=processor, environment=environment, gate=gate)
    return loop, greedy


def make_rollout(cfg: AgentGymConfig) -> AgentLoopRollout:
    """The trainer's default rollout from the run config: its model's tokenizer, tools, interactions and engine."""
    parts = rollout_parts(cfg)
    # Colocated or separate: the trainer ranks or the rollout pool's actors host the replicas (and load the model);
    # the driver builds no engine.
    engine = None if cfg.colocated_rollout or cfg.separate_rollout else make_engine(cfg)
    return AgentLoopRollout(cfg, engine, parts.tokenizer, parts.tools, parts.interactions, processor=parts.processor,
                            environment=parts.environment)
