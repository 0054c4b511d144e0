"""User reward functions: loading them from `custom_reward_function`, and calling them the way verl calls them.

Four forms are accepted, told apart by their parameters (async versions of each too):
- verl's per-sample `compute_score(data_source, solution_str, ground_truth, extra_info, **reward_kwargs)`;
- verl's batch form `compute_score(data_sources, solution_strs, ground_truths, extra_infos, **reward_kwargs)`
  returning one result per sample (verl's `batch` reward manager);
- agentgym's `fn(trajectory) -> float`, for rewards that need the whole trajectory;
- with `reward_model.reward_manager=batch`, agentgym's `fn(trajectories) -> list[float]`.

A verl result is a number or a dict whose `score` is the reward and whose other numeric entries become
`reward/extra/<key>` metrics.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentgym.config.schema import CustomRewardFunctionConfig
from agentgym.errors import ConfigError
from agentgym.trajectory import Trajectory

VERL_PARAMETERS = ("data_source", "solution_str", "ground_truth", "extra_info")
VERL_BATCH_PARAMETERS = ("data_sources", "solution_strs", "ground_truths", "extra_infos")


@dataclass
class Scored:
    """One trajectory's result from one reward: the score, extra numbers for metrics, and the error if it raised
    (then the score is 0.0)."""

    score: float
    extra: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def load_user_function(cfg: CustomRewardFunctionConfig) -> Callable[..., Any] | None:
    """`custom_reward_function.path` is a .py file or a dotted module; `name` a function in it (None: no path)."""
    if cfg.path is None:
        return None
    return load_function(cfg.path, cfg.name, entry="custom_reward_function")


def load_function(path: str, name: str, *, entry: str) -> Callable[..., Any]:
    if path.endswith(".py"):
        file = Path(path).expanduser()
        if not file.exists():
            raise ConfigError(f"reward file {file} does not exist.", entry=f"{entry}.path")
        spec = importlib.util.spec_from_file_location(f"agentgym_custom_reward_{file.stem}", file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    else:
        try:
            module = importlib.import_module(path)
        except ImportError as exc:
            raise ConfigError(f"cannot import reward module '{path}': {exc}.", entry=f"{entry}.path") from exc
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ConfigError(f"'{path}' has no function '{name}'.", entry=f"{entry}.name",
                          fix="name verl's compute_score(data_source, solution_str, ground_truth, extra_info) or a "
                              "function taking one Trajectory and returning a float")
    return fn


def function_style(fn: Callable[..., Any]) -> str:
    """"verl", "verl_batch" or "trajectory", from the parameter names."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return "trajectory"
    if "solution_strs" in params:
        return "verl_batch"
    if "solution_str" in params:
        return "verl"
    return "trajectory"


def is_verl_style(fn: Callable[..., Any]) -> bool:
    return function_style(fn) != "trajectory"


def check_verl_signature(fn: Callable[..., Any], name: str) -> None:
    params = inspect.signature(fn).parameters
    wanted = VERL_BATCH_PARAMETERS if function_style(fn) == "verl_batch" else VERL_PARAMETERS
    missing = [p for p in wanted if p not in params]
    if missing and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise ConfigError(f"'{name}' looks like verl's compute_score but lacks parameter(s) {missing}.",
                          entry="custom_reward_function.name",
                          fix=f"define {name}({', '.join(wanted[:3])}, {wanted[3]}=None)")


def rollout_reward_scores(trajectory: Trajectory) -> dict[str, list[float]]:
    """The rewards the rollout earned, keyed as verl keys them: each tool's step rewards under the tool's name,
    the interaction's turn rewards under `user_turn_rewards`."""
    scores: dict[str, list[float]] = defaultdict(list)
    named = [m for m in trajectory.tool_metrics if m.get("name")]
    if len(named) == len(trajectory.tool_rewards):
        for metrics, reward in zip(named, trajectory.tool_rewards):
            scores[str(metrics["name"])].append(float(reward))
    elif trajectory.tool_rewards:
        scores["tool_rewards"] = [float(r) for r in trajectory.tool_rewards]
    if trajectory.interaction_rewards:
        scores["user_turn_rewards"] = [float(r) for r in trajectory.interaction_rewards]
    return dict(scores)


def verl_arguments(traj: Trajectory, tokenizer: Any, reward_fn_key: str) -> dict[str, Any]:
    """What verl's reward managers pass for one sample: `solution_str` is the decoded response (special tokens
    skipped), `data_source` the row's `data.reward_fn_key` column, `ground_truth` its
    `reward_model.ground_truth`, `extra_info` the row's extra_info plus `num_turns` and `rollout_reward_scores`."""
    row = traj.row_info or {}
    if reward_fn_key not in row:
        raise KeyError(f"the row has no `{reward_fn_key}` column (data.reward_fn_key) to pass as data_source")
    reward_model = row.get("reward_model")
    if not isinstance(reward_model, dict) or "ground_truth" not in reward_model:
        raise KeyError("the row has no reward_model.ground_truth to pass as ground_truth")
    extra_info = dict(traj.extra_info)
    extra_info["num_turns"] = len(traj.turns) + 1  # verl: assistant and user/tool turns, plus the prompt
    extra_info["rollout_reward_scores"] = rollout_reward_scores(traj)
    return {"data_source": row[reward_fn_key],
            "solution_str": tokenizer.decode(traj.response_ids, skip_special_tokens=True),
            "ground_truth": reward_model["ground_truth"], "extra_info": extra_info}


def split_result(result: Any) -> Scored:
    """verl accepts a number, or a dict whose `score` is the reward and whose other entries are extra info."""
    if isinstance(result, Scored):
        return result
    if isinstance(result, dict):
        if "score" not in result:
            raise ValueError(f"the reward function returned a dict without a `score` key: {sorted(result)}")
        extra = {k: float(v) for k, v in result.items()
                 if k != "score" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        return Scored(float(result["score"]), extra)
    if not isinstance(result, (int, float)):
        raise TypeError(f"the reward function returned {type(result).__name__}, not a number or a dict with `score`")
    return Scored(float(result))


def error_result(exc: BaseException) -> Scored:
    return Scored(0.0, {}, f"{type(exc).__name__}: {exc}")
