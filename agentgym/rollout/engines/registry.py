"""Engines by name (`actor_rollout_ref.rollout.name`): a new engine is one module plus one `register_engine` call.

Factories take the run config and return an unstarted engine; they import their module lazily so that naming an
engine never costs the import of another (the server engines need no torch model, the in-process ones no HTTP).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from agentgym.config.schema import AgentGymConfig
from agentgym.errors import ConfigError
from agentgym.rollout.engines.base import Engine

EngineFactory = Callable[[AgentGymConfig], Engine]


@dataclasses.dataclass(frozen=True)
class EngineRegistry:
    """Name -> factory. One instance, `ENGINES`, holds the built-in engines; tests and plugins may build their own."""

    factories: dict[str, EngineFactory] = dataclasses.field(default_factory=dict)

    def register(self, name: str, factory: EngineFactory) -> None:
        if name in self.factories:
            raise ValueError(f"an engine named {name!r} is already registered")
        self.factories[name] = factory

    def names(self) -> list[str]:
        """In registration order (the built-in engines first)."""
        return list(self.factories)

    def build(self, cfg: AgentGymConfig) -> Engine:
        name = cfg.actor_rollout_ref.rollout.name
        factory = self.factories.get(name)
        if factory is None:
            raise ConfigError(f"unknown rollout engine `{name}`.", entry="actor_rollout_ref.rollout.name",
                              fix=f"use {_one_of(self.names())}")
        return factory(cfg)


def _one_of(names: list[str]) -> str:
    quoted = [f"`{n}`" for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f" or {quoted[-1]}"


def in_process_engine_config(cfg: AgentGymConfig) -> Any:
    """The in-process engine's config. It runs where the trainer runs: on CUDA the paged engine in
    `rollout.dtype` (KV cache sized by `rollout.gpu_memory_utilization`, batch by `rollout.max_num_seqs`, context
    by `rollout.max_model_len` or the data's prompt + response lengths), on CPU the dynamic-cache engine in fp32
    on one thread (the paged engine on CPU, `backend: paged`, reserves KV for one step's batch,
    `data.train_batch_size * rollout.n` sequences, unless `kv_cache_sequences` says otherwise).
    `rollout.engine_kwargs.transformers` overrides any field; its `backend` key (`auto`, `paged`, `dynamic`) picks
    the engine."""
    from agentgym.devices import device_type, resolve_dtype
    from agentgym.rollout.engines.dynamic_cache import DynamicCacheEngineConfig
    from agentgym.rollout.engines.paged import PagedEngineConfig

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
    config_cls = PagedEngineConfig if backend == "paged" else DynamicCacheEngineConfig
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
        kwargs.setdefault("max_model_len",
                          rollout.max_model_len or cfg.data.max_prompt_length + cfg.data.max_response_length)
        if kwargs["device"] == "cpu":
            kwargs.setdefault("kv_cache_sequences", min(rollout.max_num_seqs, cfg.data.train_batch_size * max(rollout.n, 1)))
    return config_cls(**kwargs)


def _in_process(cfg: AgentGymConfig) -> Engine:
    from agentgym.rollout.engines.dynamic_cache import DynamicCacheEngine
    from agentgym.rollout.engines.paged import PagedEngine, PagedEngineConfig

    model_path = cfg.actor_rollout_ref.model.path
    if not model_path:
        raise ConfigError("no model to serve.", entry="actor_rollout_ref.model.path",
                          fix="set it to a local HF model directory")
    tp = cfg.actor_rollout_ref.rollout.tensor_model_parallel_size
    if tp > 1:
        raise ConfigError(f"a tensor-parallel in-process replica ({tp} ranks) lives in the trainer's ranks, but this "
                          "run puts the engine in the driver (rollout.placement resolved to `driver`).",
                          entry="actor_rollout_ref.rollout.tensor_model_parallel_size",
                          fix="set actor_rollout_ref.rollout.placement=colocated with trainer.use_ray=true, or 1")
    engine_config = in_process_engine_config(cfg)
    if isinstance(engine_config, PagedEngineConfig):
        return PagedEngine(model_path, engine_config)
    return DynamicCacheEngine(model_path, engine_config)


def _sglang(cfg: AgentGymConfig) -> Engine:
    from agentgym.rollout.engines.servers.server_engines import make_sglang_engine

    return make_sglang_engine(cfg)


def _vllm(cfg: AgentGymConfig) -> Engine:
    from agentgym.rollout.engines.servers.server_engines import make_vllm_engine

    return make_vllm_engine(cfg)


ENGINES = EngineRegistry()
ENGINES.register("transformers", _in_process)
ENGINES.register("sglang", _sglang)
ENGINES.register("vllm", _vllm)


def make_engine(cfg: AgentGymConfig) -> Engine:
    """The engine `actor_rollout_ref.rollout.name` names, built from the run config (not started)."""
    return ENGINES.build(cfg)
