"""The scalar each trajectory is trained on: `Trajectory.reward`, or a user function named in the config.

Two kinds of user function are accepted, told apart by their parameters:
- verl's `compute_score(data_source, solution_str, ground_truth, extra_info, **reward_kwargs)`, called as verl's
  reward managers call it: `solution_str` is the decoded response (special tokens skipped), `data_source` the
  row's `data.reward_fn_key` column, `ground_truth` its `reward_model.ground_truth`, and `extra_info` a copy of
  the row's `extra_info` plus `num_turns` and `rollout_reward_scores` (the tool and interaction rewards the
  rollout earned). It may return a number or a dict with a `score` key, whose other numeric keys become
  `reward/extra/<key>` metrics.
- agentgym's `fn(trajectory) -> float`, for rewards that need the whole trajectory.

A function that raises scores that trajectory 0.0 (documented in the README); the step's metrics count the errors
(`reward/errors`) and the trajectory keeps the message under `extra_info["reward_error"]`, so one bad sample
never ends a run and never hides.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentgym.config.schema import CustomRewardFunctionConfig
from agentgym.errors import ConfigError
from agentgym.rollout.trajectory import Trajectory

log = logging.getLogger(__name__)

VERL_PARAMETERS = ("data_source", "solution_str", "ground_truth", "extra_info")


def default_reward(trajectory: Trajectory) -> float:
    return trajectory.reward


def load_user_function(cfg: CustomRewardFunctionConfig) -> Callable[..., Any] | None:
    """`custom_reward_function.path` is a .py file or a dotted module; `name` a function in it (None: no path)."""
    if cfg.path is None:
        return None
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
                          fix="name verl's compute_score(data_source, solution_str, ground_truth, extra_info) or a "
                              "function taking one Trajectory and returning a float")
    return fn


def is_verl_style(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "solution_str" in params


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


@dataclass
class RewardScorer:
    """Scores a batch of trajectories with the configured reward; `score` returns the scores and step metrics."""

    fn: Callable[..., Any] = default_reward
    verl_style: bool = False
    tokenizer: Any = None
    reward_fn_key: str = "data_source"
    reward_kwargs: dict[str, Any] = field(default_factory=dict)
    # id(trajectory) -> (trajectory, score, extra metrics, error); the trajectory is kept so its id stays its own.
    _memo: dict[int, tuple[Trajectory, float, dict[str, float], str | None]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_config(cls, config: Any, *, reward_fn: Callable[[Trajectory], float] | None = None) -> RewardScorer:
        if reward_fn is not None:
            return cls(fn=reward_fn)
        fn = load_user_function(config.custom_reward_function)
        if fn is None:
            return cls()
        if not is_verl_style(fn):
            return cls(fn=fn)
        missing = [p for p in VERL_PARAMETERS if p not in inspect.signature(fn).parameters]
        if missing and not any(p.kind is p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values()):
            raise ConfigError(f"'{config.custom_reward_function.name}' looks like verl's compute_score but lacks "
                              f"parameter(s) {missing}.", entry="custom_reward_function.name",
                              fix="define compute_score(data_source, solution_str, ground_truth, extra_info=None)")
        from transformers import AutoTokenizer

        model = config.actor_rollout_ref.model
        tokenizer = AutoTokenizer.from_pretrained(model.tokenizer_path or model.path)
        return cls(fn=fn, verl_style=True, tokenizer=tokenizer, reward_fn_key=config.data.reward_fn_key,
                   reward_kwargs=dict(config.custom_reward_function.reward_kwargs or {}))

    def __call__(self, trajectory: Trajectory) -> float:
        """One trajectory's score (dynamic sampling filters groups with it); remembered, so the step's `score`
        does not call the user's function again for it."""
        return self._result(trajectory)[0]

    def _result(self, traj: Trajectory) -> tuple[float, dict[str, float], str | None]:
        key = id(traj)
        if key not in self._memo:
            try:
                value, extra = _split_result(self._call(traj))
                self._memo[key] = (traj, value, extra, None)
            except Exception as exc:  # a reward bug must not end the run: the trajectory scores 0 and says why
                message = f"{type(exc).__name__}: {exc}"
                traj.extra_info = {**traj.extra_info, "reward_error": message}
                self._memo[key] = (traj, 0.0, {}, message)
        return self._memo[key][1:]

    def score(self, trajectories: Sequence[Trajectory]) -> tuple[list[float], dict[str, float]]:
        scores: list[float] = []
        extras: dict[str, list[float]] = defaultdict(list)
        errors: list[str] = []
        for traj in trajectories:
            value, extra, error = self._result(traj)
            if error is not None:
                errors.append(error)
            scores.append(value)
            for key, v in extra.items():
                extras[key].append(v)
        self._memo.clear()  # a step's scores are used once; groups dropped by dynamic sampling go with them
        metrics = {f"reward/extra/{k}": sum(v) / len(v) for k, v in extras.items()}
        if errors:
            metrics["reward/errors"] = float(len(errors))
            log.warning("the reward function raised for %d of %d trajectories; they score 0. First: %s",
                        len(errors), len(trajectories), errors[0])
        return scores, metrics

    def _call(self, traj: Trajectory) -> Any:
        if not self.verl_style:
            return self.fn(traj)
        row = traj.row_info or {}
        if self.reward_fn_key not in row:
            raise KeyError(f"the row has no `{self.reward_fn_key}` column (data.reward_fn_key) to pass as data_source")
        reward_model = row.get("reward_model")
        if not isinstance(reward_model, dict) or "ground_truth" not in reward_model:
            raise KeyError("the row has no reward_model.ground_truth to pass as ground_truth")
        extra_info = dict(traj.extra_info)
        extra_info["num_turns"] = len(traj.turns) + 1  # verl: assistant and user/tool turns, plus the prompt
        extra_info["rollout_reward_scores"] = rollout_reward_scores(traj)
        solution = self.tokenizer.decode(traj.response_ids, skip_special_tokens=True)
        return self.fn(data_source=row[self.reward_fn_key], solution_str=solution,
                       ground_truth=reward_model["ground_truth"], extra_info=extra_info, **self.reward_kwargs)


def _split_result(result: Any) -> tuple[float, dict[str, float]]:
    """verl accepts a number, or a dict whose `score` is the reward and whose other entries are extra info."""
    if isinstance(result, dict):
        if "score" not in result:
            raise ValueError(f"the reward function returned a dict without a `score` key: {sorted(result)}")
        extra = {k: float(v) for k, v in result.items()
                 if k != "score" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        return float(result["score"]), extra
    if not isinstance(result, (int, float)):
        raise TypeError(f"the reward function returned {type(result).__name__}, not a number or a dict with `score`")
    return float(result), {}
