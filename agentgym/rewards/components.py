"""Named reward components: the terms a mixed reward (`reward_model.mix`) adds up, each with its weight.

Built-in kinds:
- `rule`: the configured reward (custom_reward_function through reward_model.reward_manager; without one, the
  trajectory's own reward: outcome plus tool rewards);
- `function`: another reward function, `kwargs: {path, name, reward_kwargs, reward_manager}`;
- `model`: the sequence-classification reward model (reward_model.enable, reward_model.model.path);
- `judge`: the generative judge (reward_model.judge);
- `outcome`: the episode's outcome score (the interaction's or the row's final score), tool rewards excluded;
- `tool`: the sum of the tool rewards the episode earned;
- `format`: 0 for a well-formed episode, -1 for one with unreadable tool calls or (with `kwargs.pattern`) whose
  last assistant message does not match the pattern; a positive weight makes it a penalty;
- `length`: 0 up to `max_tokens - buffer` model tokens, falling linearly to -1 at `max_tokens` (DAPO's soft
  overlong penalty; defaults: data.max_response_length and a quarter of it).

Any other kind is `package.module:factory`: `factory(spec, context)` returns an object with a `name`, a
`per_sample` flag and `async score(trajectories) -> list[float | Scored]` (and, optionally, `step_metrics()`
for throughput figures). That is how components outside this package, such as visual consistency, plug in.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import yaml

from agentgym.config.schema import AgentGymConfig, RewardComponentConfig
from agentgym.errors import ConfigError
from agentgym.rewards.functions import Scored, load_function
from agentgym.rewards.managers import RewardFunction, RewardManager, make_manager
from agentgym.trajectory import Trajectory


@runtime_checkable
class RewardComponent(Protocol):
    name: str
    per_sample: bool
    """True when scoring trajectories one at a time (as each episode ends) costs no more than a batch."""

    async def score(self, trajectories: Sequence[Trajectory]) -> Sequence[float | Scored]: ...


@dataclass
class ComponentContext:
    """What components are built from: the run config and the shared pieces, each built once on first use."""

    config: AgentGymConfig
    rule_function: Callable[[], RewardFunction]
    _tokenizer: Any = None
    _reward_model: Any = None
    _judge: Any = None

    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            model = self.config.actor_rollout_ref.model
            self._tokenizer = AutoTokenizer.from_pretrained(model.tokenizer_path or model.path)
        return self._tokenizer

    def reward_model(self) -> Any:
        if self._reward_model is None:
            from agentgym.rewards.reward_model import SequenceRewardModel

            self._reward_model = SequenceRewardModel.from_config(self.config)
        return self._reward_model

    def judge(self) -> Any:
        if self._judge is None:
            from agentgym.rewards.judge import GenerativeJudge

            self._judge = GenerativeJudge.from_config(self.config)
        return self._judge

    async def aclose(self) -> None:
        """Close the shared pieces that hold engines or workers (the judge's engine, the reward model's workers);
        built again on next use."""
        judge, model, self._judge, self._reward_model = self._judge, self._reward_model, None, None
        if judge is not None:
            await judge.close()
        if model is not None:
            model.shutdown()


@dataclass
class ManagedComponent:
    """A reward function under a reward manager."""

    name: str
    manager: RewardManager

    @property
    def per_sample(self) -> bool:
        return self.manager.per_sample

    async def score(self, trajectories: Sequence[Trajectory]) -> list[Scored]:
        return await self.manager.score(trajectories)

    def step_metrics(self) -> dict[str, float]:
        fn = getattr(self.manager, "step_metrics", None)
        return fn() if fn else {}


@dataclass
class TrajectoryComponent:
    """A cheap number read off the trajectory."""

    name: str
    fn: Callable[[Trajectory], float]
    per_sample: bool = True

    async def score(self, trajectories: Sequence[Trajectory]) -> list[float]:
        return [float(self.fn(t)) for t in trajectories]


def _format_penalty(pattern: str | None, count_parse_errors: bool) -> Callable[[Trajectory], float]:
    regex = re.compile(pattern, re.DOTALL) if pattern else None

    def penalty(traj: Trajectory) -> float:
        if count_parse_errors and any(m.get("error_kind") == "parse_error" for m in traj.tool_metrics):
            return -1.0
        if regex is not None:
            last = next((m for m in reversed(traj.messages) if m.get("role") == "assistant"), None)
            text = last.get("content") if last else None
            if not isinstance(text, str) or not regex.search(text):
                return -1.0
        return 0.0

    return penalty


def _length_penalty(max_tokens: int, buffer: int) -> Callable[[Trajectory], float]:
    if not 0 < buffer <= max_tokens:
        raise ConfigError(f"length penalty buffer ({buffer}) must be between 1 and max_tokens ({max_tokens}).",
                          entry="reward_model.mix[].kwargs.buffer")
    start = max_tokens - buffer

    def penalty(traj: Trajectory) -> float:
        model_tokens = sum(traj.loss_mask) if traj.loss_mask else len(traj.response_ids)
        return -min(max(model_tokens - start, 0) / buffer, 1.0)

    return penalty


def _take(kwargs: dict[str, Any], allowed: set[str], spec: RewardComponentConfig) -> dict[str, Any]:
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ConfigError(f"reward component `{spec.name}` (kind {spec.kind}) has unknown option(s) {unknown}.",
                          entry=f"reward_model.mix.{spec.name}.kwargs", fix=f"use only {sorted(allowed)}")
    return kwargs


def build_component(spec: RewardComponentConfig, context: ComponentContext) -> RewardComponent:
    kw = dict(spec.kwargs)
    cfg = context.config
    if spec.kind == "rule":
        _take(kw, set(), spec)
        return ManagedComponent(spec.name, make_manager(cfg.reward_model.reward_manager, context.rule_function(),
                                                        rate_limit=cfg.reward_model.rate_limit))
    if spec.kind == "function":
        _take(kw, {"path", "name", "reward_kwargs", "reward_manager"}, spec)
        if "path" not in kw:
            raise ConfigError(f"reward component `{spec.name}` of kind function needs kwargs.path.",
                              entry=f"reward_model.mix.{spec.name}.kwargs.path")
        fn = load_function(kw["path"], kw.get("name", "compute_score"), entry=f"reward_model.mix.{spec.name}.kwargs")
        base = context.rule_function()
        function = RewardFunction(fn, tokenizer=context.tokenizer() if _needs_tokenizer(fn) else None,
                                  reward_fn_key=base.reward_fn_key, reward_kwargs=dict(kw.get("reward_kwargs") or {}))
        return ManagedComponent(spec.name, make_manager(kw.get("reward_manager", cfg.reward_model.reward_manager),
                                                        function, rate_limit=cfg.reward_model.rate_limit))
    if spec.kind == "model":
        _take(kw, set(), spec)
        return SharedScorerComponent(spec.name, context.reward_model())
    if spec.kind == "judge":
        _take(kw, set(), spec)
        return SharedScorerComponent(spec.name, context.judge())
    if spec.kind == "outcome":
        _take(kw, set(), spec)
        return TrajectoryComponent(spec.name, lambda t: t.final_score)
    if spec.kind == "tool":
        _take(kw, set(), spec)
        return TrajectoryComponent(spec.name, lambda t: sum(t.tool_rewards))
    if spec.kind == "format":
        _take(kw, {"pattern", "count_parse_errors"}, spec)
        return TrajectoryComponent(spec.name, _format_penalty(kw.get("pattern"), kw.get("count_parse_errors", True)))
    if spec.kind == "length":
        _take(kw, {"max_tokens", "buffer"}, spec)
        max_tokens = int(kw.get("max_tokens", cfg.data.max_response_length))
        return TrajectoryComponent(spec.name, _length_penalty(max_tokens, int(kw.get("buffer", max(max_tokens // 4, 1)))))
    if ":" in spec.kind:
        module_name, _, attr = spec.kind.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot load reward component factory `{spec.kind}`: {exc}.",
                              entry=f"reward_model.mix.{spec.name}.kind") from exc
        component = factory(spec, context)
        if not isinstance(component, RewardComponent):
            raise ConfigError(f"`{spec.kind}` returned {type(component).__name__}, which lacks name, per_sample or "
                              f"async score(trajectories).", entry=f"reward_model.mix.{spec.name}.kind")
        return component
    raise ConfigError(f"unknown reward component kind `{spec.kind}` (component `{spec.name}`).",
                      entry=f"reward_model.mix.{spec.name}.kind",
                      fix="use rule, function, model, judge, outcome, tool, format, length, or package.module:factory")


@dataclass
class SharedScorerComponent:
    """A shared scorer (reward model, judge) under the component's name."""

    name: str
    scorer: Any

    @property
    def per_sample(self) -> bool:
        return self.scorer.per_sample

    async def score(self, trajectories: Sequence[Trajectory]) -> Sequence[float | Scored]:
        return await self.scorer.score(trajectories)

    def step_metrics(self) -> dict[str, float]:
        return self.scorer.step_metrics()


def _needs_tokenizer(fn: Callable[..., Any]) -> bool:
    from agentgym.rewards.functions import function_style

    return function_style(fn) != "trajectory"


def read_mix(mix: list[RewardComponentConfig] | str) -> list[RewardComponentConfig]:
    """`reward_model.mix` as components: given inline, or read from a YAML file holding `components:`."""
    if not isinstance(mix, str):
        specs = list(mix)
    else:
        path = Path(mix).expanduser()
        if not path.exists():
            raise ConfigError(f"reward mix file {path} does not exist.", entry="reward_model.mix")
        data = yaml.safe_load(path.read_text()) or {}
        items = data.get("components") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise ConfigError(f"{path} has no `components:` list.", entry="reward_model.mix",
                              fix="write components: [{name: ..., kind: ..., weight: ...}, ...]")
        try:
            specs = [RewardComponentConfig.model_validate(item) for item in items]
        except Exception as exc:
            raise ConfigError(f"{path}: {exc}", entry="reward_model.mix") from exc
    if not specs:
        raise ConfigError("reward_model.mix lists no components.", entry="reward_model.mix")
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"reward components must have distinct names; repeated: {dupes}.", entry="reward_model.mix")
    return specs
