"""The scalar a trajectory is trained on: `Trajectory.reward`, or a user function named in the config."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path

from agentgym.config.schema import CustomRewardFunctionConfig
from agentgym.errors import ConfigError
from agentgym.rollout.trajectory import Trajectory


def default_reward(trajectory: Trajectory) -> float:
    return trajectory.reward


def load_reward_fn(cfg: CustomRewardFunctionConfig) -> Callable[[Trajectory], float]:
    """`custom_reward_function.path` is a .py file or a dotted module; `name` a function of one Trajectory."""
    if cfg.path is None:
        return default_reward
    if cfg.path.endswith(".py"):
        file = Path(cfg.path).expanduser()
        if not file.exists():
            raise ConfigError(f"reward file {file} does not exist.", entry="custom_reward_function.path")
        spec = importlib.util.spec_from_file_location(f"agentgym_custom_reward_{file.stem}", file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    else:
        try:
            module = importlib.import_module(cfg.path)
        except ImportError as exc:
            raise ConfigError(f"cannot import reward module '{cfg.path}': {exc}.",
                              entry="custom_reward_function.path") from exc
    fn = getattr(module, cfg.name, None)
    if not callable(fn):
        raise ConfigError(f"'{cfg.path}' has no function '{cfg.name}'.", entry="custom_reward_function.name",
                          fix="name a function taking one Trajectory and returning a float")
    return fn
