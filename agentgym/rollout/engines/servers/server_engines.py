"""The HTTP engines built from a run config: `rollout.name=sglang|vllm` with `rollout.engine_kwargs.<name>`.

`engine_kwargs.<name>` takes the engine config's fields (`urls`, timeouts, `weight_sync_dir`, ...) and `launch`
(a `LaunchConfig`). Without `urls` the engine starts its own servers at `start()` and stops them at `close()`;
their tensor-parallel size, memory fraction and dtype come from `rollout.tensor_model_parallel_size`,
`rollout.gpu_memory_utilization` and `rollout.dtype`, and state-dict weight updates go through a temporary folder
next to the local servers, removed when they stop.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from agentgym.errors import ConfigError
from agentgym.rollout.engines.servers.launch import LaunchConfig, ServerLauncher, ServerSpec


def _engine_kwargs(cfg: Any, name: str, config_cls: type) -> tuple[dict[str, Any], dict[str, Any] | None]:
    entry = f"actor_rollout_ref.rollout.engine_kwargs.{name}"
    kwargs = dict(cfg.actor_rollout_ref.rollout.engine_kwargs.get(name) or {})
    launch = kwargs.pop("launch", None)
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise ConfigError(f"unknown {name} engine option(s) {unknown}.", entry=entry, fix=f"use only {sorted(fields | {'launch'})}")
    if launch is not None:
        launch_fields = {f.name for f in dataclasses.fields(LaunchConfig)}
        if not isinstance(launch, dict):
            raise ConfigError(f"launch must be a mapping, got {launch!r}.", entry=f"{entry}.launch",
                              fix=f"give it keys among {sorted(launch_fields)}")
        if set(launch) - launch_fields:
            raise ConfigError(f"unknown launch option(s) {sorted(set(launch) - launch_fields)}.", entry=f"{entry}.launch",
                              fix=f"use only {sorted(launch_fields)}")
    if isinstance(kwargs.get("urls"), str):
        kwargs["urls"] = [kwargs["urls"]]
    return kwargs, launch


def _launcher(cfg: Any, kind: str, launch: dict[str, Any] | None, **spec_extra: Any) -> ServerLauncher:
    from agentgym.devices import resolve_dtype

    rollout = cfg.actor_rollout_ref.rollout
    model_path = cfg.actor_rollout_ref.model.path
    url_key = f"actor_rollout_ref.rollout.engine_kwargs.{kind}.urls"
    if not model_path:
        raise ConfigError("no model for the servers to serve.", entry="actor_rollout_ref.model.path",
                          fix=f"set it to a local HF model directory, or set {url_key} to running servers")
    spec = ServerSpec(
        kind=kind,  # type: ignore[arg-type]
        model_path=str(model_path),
        tensor_parallel_size=rollout.tensor_model_parallel_size,
        gpu_memory_utilization=rollout.gpu_memory_utilization,
        dtype=str(resolve_dtype(rollout.dtype)).removeprefix("torch."),
        max_model_len=rollout.max_model_len,
        **spec_extra,
    )
    try:
        launch_cfg = LaunchConfig(**(launch or {}))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad launch settings: {exc}.", entry=f"actor_rollout_ref.rollout.engine_kwargs.{kind}.launch") from exc
    return ServerLauncher(spec, launch_cfg, url_key=url_key)


def _build(cfg: Any, name: str, config_cls: type, engine_cls: type, **spec_extra: Any) -> Any:
    kwargs, launch = _engine_kwargs(cfg, name, config_cls)
    kwargs.setdefault("model_path", cfg.actor_rollout_ref.model.path)
    launcher = None
    if not kwargs.get("urls"):
        launcher = _launcher(cfg, name, launch, **spec_extra)
        kwargs.setdefault("weight_sync_dir", launcher.scratch_dir("weights"))
        kwargs.setdefault("start_timeout_s", launcher.config.start_timeout_s)
    elif launch is not None:
        raise ConfigError(f"both urls and launch are set for the {name} engine.",
                          entry=f"actor_rollout_ref.rollout.engine_kwargs.{name}",
                          fix="drop urls to have agentgym start the servers, or drop launch to use running servers")
    try:
        config = config_cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad {name} engine settings: {exc}.", entry=f"actor_rollout_ref.rollout.engine_kwargs.{name}") from exc
    return engine_cls(config, launcher=launcher)


def make_sglang_engine(cfg: Any) -> Any:
    from agentgym.rollout.engines.servers.sglang_engine import SGLangEngine, SGLangEngineConfig

    return _build(cfg, "sglang", SGLangEngineConfig, SGLangEngine)


def make_vllm_engine(cfg: Any) -> Any:
    from agentgym.rollout.engines.servers.vllm_engine import VLLMEngine, VLLMEngineConfig

    mode = (cfg.actor_rollout_ref.rollout.engine_kwargs.get("vllm") or {}).get("logprobs_mode", "processed_logprobs")
    return _build(cfg, "vllm", VLLMEngineConfig, VLLMEngine, vllm_logprobs_mode=mode)
