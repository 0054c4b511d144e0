"""`python -m agentgym.trainer.main_ppo [CONFIG.yaml] key=value ...`: an RL run from one YAML plus dotted overrides.

The rollout side is a factory `make_rollout(config) -> Rollout` (agentgym.rollout.protocol; a factory returning the
older `(collect, engine)` pair works too): pass it to `main()`/`run_ppo()` from Python, or name it on the command
line with `--rollout package.module:function`. Without either, the default is the agent loop built from the config
(`agentgym.rollout.build:make_rollout`: model, tools, interaction, engine).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agentgym.config import AgentGymConfig, load_config
from agentgym.errors import AgentGymError, ConfigError
from agentgym.models.local_path import check_model_path
from agentgym.rows import read_rows
from agentgym.rollout.protocol import CollectFn, Rollout, WeightReceiver, as_rollout
from agentgym.tools.embedded_sandbox import stop_embedded_sandboxes
from agentgym.trainer.driver import RLTrainer
from agentgym.utils.shutdown import Interrupted, ray_is_up, run_until_signal, stop_ray as shutdown_ray

RolloutFactory = Callable[[AgentGymConfig], "Rollout | tuple[CollectFn, WeightReceiver | None]"]


DEFAULT_ROLLOUT = "agentgym.rollout.build:make_rollout"


def parse_args(argv: Sequence[str]) -> tuple[str | None, list[str], str | None]:
    """(YAML path, overrides, rollout factory). Accepts `--config FILE`, hydra's `--config-path DIR
    --config-name NAME`, or a bare first argument ending in .yaml/.yml."""
    parser = argparse.ArgumentParser(prog="python -m agentgym.trainer.main_ppo", description=__doc__)
    parser.add_argument("--config", default=None, help="run YAML")
    parser.add_argument("--config-path", default=None)
    parser.add_argument("--config-name", default=None)
    parser.add_argument("--rollout", default=None, help="module:function returning a Rollout (or (collect, engine))")
    parser.add_argument("rest", nargs="*", help="[CONFIG.yaml] key=value overrides")
    args = parser.parse_intermixed_args(list(argv))
    rest = list(args.rest)
    path = args.config
    if path is None and rest and "=" not in rest[0] and rest[0].endswith((".yaml", ".yml")):
        path = rest.pop(0)
    if path is None and args.config_name:
        name = args.config_name if args.config_name.endswith((".yaml", ".yml")) else args.config_name + ".yaml"
        path = str(Path(args.config_path or ".") / name)
    return path, rest, args.rollout


def import_factory(spec: str) -> RolloutFactory:
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise ConfigError(f"--rollout '{spec}' must look like package.module:function.")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import rollout factory '{spec}': {exc}.") from exc


async def run_ppo_async(
    config: AgentGymConfig,
    *,
    collect: CollectFn | None = None,
    engine: WeightReceiver | None = None,
    make_rollout: RolloutFactory | None = None,
    dataset: Sequence[dict[str, Any]] | None = None,
) -> list[dict[str, float]]:
    check_model_path(config.actor_rollout_ref.model.path)
    if config.actor_rollout_ref.model.tokenizer_path:
        check_model_path(config.actor_rollout_ref.model.tokenizer_path, entry="actor_rollout_ref.model.tokenizer_path")
    if collect is None and make_rollout is None:
        raise ConfigError("no rollout is wired to the trainer.",
                          fix="pass make_rollout=... (or --rollout module:function) returning a Rollout")
    rows = list(dataset) if dataset is not None else read_rows(
        config.data.train_files, prompt_key=config.data.prompt_key, check_prompts=False)
    if not rows:
        raise ConfigError("no training rows.", entry="data.train_files", fix="point data.train_files at a dataset file")
    check_training_rows(config, rows, default_rollout=collect is None and _is_default_rollout(make_rollout))
    ray_was_up = ray_is_up()  # a Ray this run starts (trainer ranks, reward model) is stopped by this run
    owned: Rollout | None = None
    if collect is None:
        assert make_rollout is not None
        owned = as_rollout(make_rollout(config))  # built here from the config: closed here (servers it launched stop)
        trainer = RLTrainer(config, rollout=owned, dataset=rows)
    else:
        trainer = RLTrainer(config, collect=collect, engine=engine, dataset=rows)
    interrupted = False
    try:
        return await trainer.fit()
    except asyncio.CancelledError:
        interrupted = True
        raise
    finally:
        await close_run(trainer, owned, stop_ray=not ray_was_up, interrupted=interrupted)


async def close_run(trainer: RLTrainer, rollout: Rollout | None, *, stop_ray: bool, interrupted: bool = False,
                    timeout_s: float = 30.0) -> None:
    """Everything a run opened, closed in order: the rollout (its engine and the servers that engine launched,
    agent workers, an environment server's connections), the reward engines (judge, reward model), the trainer
    ranks, this event loop's pooled HTTP connections, and Ray when this run started it. Each step is bounded by
    `timeout_s` and one failing does not keep the next from running. `interrupted`: the run was cancelled by a
    signal; with Ray about to be stopped the ranks are not waited for (stopping Ray ends them)."""
    from agentgym.tools.sandbox_fusion import aclose_http_sessions

    async def step(name: str, closing: Any) -> None:
        try:
            await asyncio.wait_for(closing, timeout_s)
        except Exception as exc:  # noqa: BLE001 - reported, and the remaining steps still run
            print(f"agentgym: closing {name} failed ({type(exc).__name__}: {exc}); going on", file=sys.stderr)

    if rollout is not None:
        await step("the rollout", rollout.close())
    await step("the trainer", trainer.aclose(abandon_workers=interrupted and stop_ray))
    await step("the HTTP connections", aclose_http_sessions())
    if stop_ray:
        shutdown_ray()


def _is_default_rollout(make_rollout: RolloutFactory | None) -> bool:
    from agentgym.rollout import build as default

    return make_rollout is default.make_rollout


def check_training_rows(config: AgentGymConfig, rows: Sequence[dict[str, Any]], *, default_rollout: bool) -> None:
    """Rows checked against what the config registers, before any model or engine is built.

    The default rollout registers exactly the config's tools and interactions. A custom rollout may bring its own:
    then only what the config names is checked against (rows still need a prompt).
    """
    from agentgym.rows.check import Registered
    from agentgym.rollout.build import check_dataset, registered_names

    mt = config.actor_rollout_ref.rollout.multi_turn
    names = registered_names(config)
    registered = Registered(
        tools=names.tools if default_rollout or mt.tool_config_path or mt.function_tool_path else None,
        interactions=names.interactions if default_rollout or mt.interaction_config_path else None,
    )
    files = config.data.train_files
    source = ", ".join([files] if isinstance(files, str) else files) if files else "the training rows"
    check_dataset(config, rows, registered=registered, source=source)


def run_ppo(config: AgentGymConfig, **kwargs: Any) -> list[dict[str, float]]:
    return asyncio.run(run_ppo_async(config, **kwargs))


def main(argv: Sequence[str] | None = None, *, make_rollout: RolloutFactory | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        path, overrides, rollout_spec = parse_args(argv)
        config = load_config(path, overrides)
        if rollout_spec is not None:
            make_rollout = import_factory(rollout_spec)
        elif make_rollout is None:
            make_rollout = import_factory(DEFAULT_ROLLOUT)
        run_until_signal(run_ppo_async(config, make_rollout=make_rollout), what="the training run",
                         on_interrupt=[stop_embedded_sandboxes])
    except Interrupted as exc:
        print(f"agentgym: {exc}", file=sys.stderr)
        return exc.exit_code
    except AgentGymError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
