"""The scalar each trajectory is trained on, from the configured reward (agentgym.rewards).

Without `reward_model.mix` the reward is one term: the user function (`custom_reward_function`, any of the forms
in agentgym.rewards.functions) called through `reward_model.reward_manager`; else the reward model when
`reward_model.enable` (as in verl, its score replaces the rule reward), else the judge when
`reward_model.judge.enable`, else `Trajectory.reward`. With `reward_model.mix` it is the weighted sum of the
named components, each logged as `reward/component/<name>/mean`.

A function that raises scores that trajectory 0.0 (documented in the README); the step's metrics count the errors
(`reward/errors`) and the trajectory keeps the message under `extra_info["reward_error"]`, so one bad sample
never ends a run and never hides.

With `reward_model.launch_reward_fn_async`, `submit` starts scoring a trajectory the moment its episode ends (the
rollout's `on_done`), so per-sample rewards overlap the rest of the rollout; `score` then only waits for them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentgym.errors import AgentGymError
from agentgym.rewards.components import (ComponentContext, ManagedComponent, RewardComponent, SharedScorerComponent,
                                         build_component, read_mix)
from agentgym.rewards.functions import (Scored, check_verl_signature, error_result, is_verl_style,
                                        load_user_function, split_result)
from agentgym.rewards.managers import RewardFunction, default_reward, make_manager
from agentgym.trajectory import Trajectory

log = logging.getLogger(__name__)

# Kept importable from here: tests and user code written against session 4's module use them.
__all__ = ["RewardScorer", "Term", "default_reward", "is_verl_style", "load_user_function"]


@dataclass
class Term:
    component: RewardComponent
    weight: float = 1.0

    @property
    def name(self) -> str:
        return self.component.name


@dataclass
class _Entry:
    trajectory: Trajectory  # held so that its id stays its own while the entry lives
    results: dict[str, Scored | asyncio.Task] = field(default_factory=dict)


@dataclass
class RewardScorer:
    """Scores a step's trajectories with the configured reward; `score` returns the scores and the step's metrics."""

    terms: list[Term]
    mixed: bool = False
    launch_async: bool = False
    context: ComponentContext | None = None  # owns the judge's engine and the reward model, closed by `aclose`
    _memo: dict[int, _Entry] = field(default_factory=dict, repr=False)

    @classmethod
    def from_config(cls, config: Any, *, reward_fn: Callable[[Trajectory], float] | None = None) -> RewardScorer:
        rm = config.reward_model
        rule_cache: list[RewardFunction] = []

        def rule_function() -> RewardFunction:
            if not rule_cache:
                rule_cache.append(_rule_function(config, reward_fn, context))
            return rule_cache[0]

        context = ComponentContext(config, rule_function)
        if rm.mix is not None:
            specs = read_mix(rm.mix)
            terms = [Term(build_component(spec, context), spec.weight) for spec in specs]
            return cls(terms, mixed=True, launch_async=rm.launch_reward_fn_async, context=context)
        user_fn = reward_fn is not None or config.custom_reward_function.path is not None
        if not user_fn and rm.enable:
            component: RewardComponent = SharedScorerComponent("score", context.reward_model())
        elif not user_fn and rm.judge.enable:
            component = SharedScorerComponent("score", context.judge())
        else:
            component = ManagedComponent("score", make_manager(rm.reward_manager, rule_function(),
                                                               rate_limit=rm.rate_limit))
        return cls([Term(component)], launch_async=rm.launch_reward_fn_async, context=context)

    @classmethod
    def of_function(cls, fn: Callable[..., Any]) -> RewardScorer:
        """One trajectory-taking (or verl batch-less) function under the naive manager."""
        return cls([Term(ManagedComponent("score", make_manager("naive", RewardFunction(fn))))])

    async def aclose(self) -> None:
        """Stop what scoring started: the judge's engine (and any server it launched), reward-model workers;
        scores still being computed for the step are cancelled."""
        for task in (r for e in self._memo.values() for r in e.results.values() if isinstance(r, asyncio.Future)):
            task.cancel()
        self._memo.clear()
        if self.context is not None:
            await self.context.aclose()

    # ---- scoring ----
    def submit(self, trajectory: Trajectory) -> None:
        """Start the per-sample terms for a trajectory whose episode just ended (the rollout's `on_done`)."""
        if not self.launch_async:
            return
        entry = self._entry(trajectory)
        for term in self.terms:
            if term.component.per_sample and term.name not in entry.results:
                entry.results[term.name] = asyncio.ensure_future(self._one(term, trajectory))

    async def _one(self, term: Term, trajectory: Trajectory) -> Scored:
        return (await self._run(term, [trajectory]))[0]

    async def _run(self, term: Term, trajectories: Sequence[Trajectory]) -> list[Scored]:
        try:
            values = list(await term.component.score(trajectories))
            if len(values) != len(trajectories):
                raise ValueError(f"returned {len(values)} scores for {len(trajectories)} trajectories")
            return [_as_scored(v) for v in values]
        except Exception as exc:
            if isinstance(term.component, ManagedComponent) or isinstance(exc, AgentGymError):
                raise  # managers turn a user function's errors into records: this is a bug or a config error
            raise RuntimeError(f"reward component `{term.name}` failed: {type(exc).__name__}: {exc}") from exc

    def _entry(self, trajectory: Trajectory) -> _Entry:
        entry = self._memo.get(id(trajectory))
        if entry is None or entry.trajectory is not trajectory:
            entry = self._memo[id(trajectory)] = _Entry(trajectory)
        return entry

    async def prefetch(self, trajectories: Sequence[Trajectory]) -> None:
        """Score every term of every trajectory not yet scored (batch terms in one call per term)."""
        entries = [self._entry(t) for t in trajectories]
        for term in self.terms:
            todo = [e for e in entries if term.name not in e.results]
            if todo:
                for entry, value in zip(todo, await self._run(term, [e.trajectory for e in todo])):
                    entry.results[term.name] = value
            for entry in entries:
                result = entry.results[term.name]
                if isinstance(result, asyncio.Future):
                    entry.results[term.name] = await result

    def __call__(self, trajectory: Trajectory) -> float:
        """One trajectory's score (dynamic sampling filters groups with it). The trainer prefetches a collected
        batch first; outside an event loop a missing score is computed here."""
        entry = self._memo.get(id(trajectory))
        if entry is None or any(isinstance(entry.results.get(t.name), (asyncio.Future, type(None)))
                                for t in self.terms):
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                asyncio.run(self.prefetch([trajectory]))
            else:
                raise RuntimeError("RewardScorer: await scorer.prefetch(trajectories) before reading scores inside "
                                   "an event loop")
        return self._total(self._memo[id(trajectory)])

    def _total(self, entry: _Entry) -> float:
        return sum(term.weight * entry.results[term.name].score for term in self.terms)

    async def score(self, trajectories: Sequence[Trajectory]) -> tuple[list[float], dict[str, float]]:
        await self.prefetch(trajectories)
        entries = [self._memo[id(t)] for t in trajectories]
        scores = [self._total(e) for e in entries]
        metrics = self._metrics(entries)
        for task in (r for e in self._memo.values() for r in e.results.values() if isinstance(r, asyncio.Future)):
            task.cancel()  # submitted for trajectories that dynamic sampling dropped
        self._memo.clear()  # a step's scores are used once
        return scores, metrics

    def _metrics(self, entries: list[_Entry]) -> dict[str, float]:
        extras: dict[str, list[float]] = defaultdict(list)
        errors: list[str] = []
        metrics: dict[str, float] = {}
        for term in self.terms:
            results = [e.results[term.name] for e in entries]
            for entry, result in zip(entries, results):
                if result.error is not None:
                    message = f"{term.name}: {result.error}" if self.mixed else result.error
                    errors.append(message)
                    entry.trajectory.extra_info = {**entry.trajectory.extra_info, "reward_error": message}
                for key, v in result.extra.items():
                    extras[key].append(v)
            if self.mixed and results:
                metrics[f"reward/component/{term.name}/mean"] = sum(r.score for r in results) / len(results)
                n_errors = sum(r.error is not None for r in results)
                if n_errors:
                    metrics[f"reward/component/{term.name}/errors"] = float(n_errors)
            step_metrics = getattr(term.component, "step_metrics", None)
            if step_metrics is not None:
                metrics.update(step_metrics())
        metrics.update({f"reward/extra/{k}": sum(v) / len(v) for k, v in extras.items()})
        if errors:
            metrics["reward/errors"] = float(len(errors))
            log.warning("the reward raised for %d of %d trajectories; they score 0 there. First: %s",
                        len(errors), len(entries), errors[0])
        return metrics


def _rule_function(config: Any, reward_fn: Callable[[Trajectory], float] | None,
                   context: ComponentContext) -> RewardFunction:
    if reward_fn is not None:
        return RewardFunction(reward_fn)
    fn = load_user_function(config.custom_reward_function)
    if fn is None:
        return RewardFunction()
    if not is_verl_style(fn):
        return RewardFunction(fn)
    check_verl_signature(fn, config.custom_reward_function.name)
    return RewardFunction(fn, tokenizer=context.tokenizer(), reward_fn_key=config.data.reward_fn_key,
                          reward_kwargs=dict(config.custom_reward_function.reward_kwargs or {}))


def _as_scored(value: Any) -> Scored:
    if isinstance(value, Scored):
        return value
    try:
        return split_result(value)
    except Exception as exc:
        return error_result(exc)

