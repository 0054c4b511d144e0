"""The HTTP engines built from a run config: `rollout.name=sglang|vllm` with `rollout.engine_kwargs.<name>`.

`engine_kwargs.<name>` takes the engine config's fields (`urls`, timeouts, `weight_sync_dir`, ...) and `launch`
(a `LaunchConfig`). Without `urls` the engine starts its own servers at `start()` and stops them at `close()`;
their tensor-parallel size, memory fraction and dtype come from `rollout.tensor_model_parallel_size`,
`rollout.gpu_memory_utilization` and `rollout.dtype`, and state-dict weight updates go through a temporary folder
next to the local servers, removed when they stop.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
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


def _launcher(cfg: Any, kind: str, launch: dict[str, Any] | None, *, die_with_parent: bool = False,
              **spec_extra: Any) -> ServerLauncher:
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
    return ServerLauncher(spec, launch_cfg, url_key=url_key, die_with_parent=die_with_parent)


def _build(cfg: Any, name: str, config_cls: type, engine_cls: type, urls: list[str] | None = None,
           **spec_extra: Any) -> Any:
    kwargs, launch = _engine_kwargs(cfg, name, config_cls)
    kwargs.setdefault("model_path", cfg.actor_rollout_ref.model.path)
    launcher = None
    if urls is not None:  # servers the rollout pool's actors launched: the disk path writes under the run folder
        kwargs["urls"] = list(urls)
        launch = None
        if "weight_sync_dir" not in kwargs:  # a fresh folder each start: a resumed run's versions restart at 1
            root = Path(cfg.checkpoint_dir).absolute()
            root.mkdir(parents=True, exist_ok=True)
            kwargs["weight_sync_dir"] = tempfile.mkdtemp(prefix="rollout-weights-", dir=root)
    elif not kwargs.get("urls"):
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


def make_sglang_engine(cfg: Any, urls: list[str] | None = None) -> Any:
    """`urls`: servers started elsewhere (a separate rollout pool's actors); the engine launches none then."""
    from agentgym.rollout.engines.servers.sglang_engine import SGLangEngine, SGLangEngineConfig

    return _build(cfg, "sglang", SGLangEngineConfig, SGLangEngine, urls)


def _vllm_mode(cfg: Any) -> str:
    return (cfg.actor_rollout_ref.rollout.engine_kwargs.get("vllm") or {}).get("logprobs_mode", "processed_logprobs")


def make_vllm_engine(cfg: Any, urls: list[str] | None = None) -> Any:
    from agentgym.rollout.engines.servers.vllm_engine import VLLMEngine, VLLMEngineConfig

    return _build(cfg, "vllm", VLLMEngineConfig, VLLMEngine, urls, vllm_logprobs_mode=_vllm_mode(cfg))


def make_server_engine(cfg: Any, urls: list[str]) -> Any:
    """The driver's engine over the servers a separate rollout pool launched (`rollout.name` sglang or vllm)."""
    name = cfg.actor_rollout_ref.rollout.name
    return make_sglang_engine(cfg, urls) if name == "sglang" else make_vllm_engine(cfg, urls)


def pool_server_launcher(cfg: Any, host: str, env: dict[str, str]) -> ServerLauncher:
    """One server for a rollout-pool actor, launched by it as its child: the run's launch settings, one server,
    bound to `host` (the actor's node unless launch.host names another address), with `env` added (its GPUs)."""
    name = cfg.actor_rollout_ref.rollout.name
    config_cls = _engine_config_cls(name)
    _, launch = _engine_kwargs(cfg, name, config_cls)
    launch = dict(launch or {})
    if cfg.actor_rollout_ref.rollout.tensor_model_parallel_size > 1:
        raise ConfigError("a rollout-pool actor holds one GPU, so its server runs without tensor parallelism "
                          "(servers of several GPUs per actor are not built yet).",
                          entry="actor_rollout_ref.rollout.tensor_model_parallel_size",
                          fix="set it to 1, or give the servers' URLs in engine_kwargs urls with placement=driver")
    if launch.get("num_servers", 1) != 1 or launch.get("ports"):
        raise ConfigError("with rollout.placement=separate each rollout-pool actor launches one server on its GPU.",
                          entry=f"actor_rollout_ref.rollout.engine_kwargs.{name}.launch",
                          fix="drop num_servers and ports; size the pool with actor_rollout_ref.rollout.nnodes and "
                              "n_gpus_per_node")
    if launch.get("host", "127.0.0.1") == "127.0.0.1":
        launch["host"] = host
    launch["env"] = {**(launch.get("env") or {}), **env}
    extra = {"vllm_logprobs_mode": _vllm_mode(cfg)} if name == "vllm" else {}
    return _launcher(cfg, name, launch, die_with_parent=True, **extra)


def _engine_config_cls(name: str) -> type:
    if name == "sglang":
        from agentgym.rollout.engines.servers.sglang_engine import SGLangEngineConfig

        return SGLangEngineConfig
    from agentgym.rollout.engines.servers.vllm_engine import VLLMEngineConfig

    return VLLMEngineConfig
