"""Greedy-response baselines, for estimators that ask for them (`register_adv_estimator(..., greedy_baseline=True)`,
ReMax): one temperature-0 response per prompt, scored like the samples; its reward is the prompt's baseline.

The driver holds one of these only when the configured estimator needs it, so the loop names no algorithm.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from agentgym.errors import ConfigError
from agentgym.rollout.protocol import Rollout
from agentgym.trainer import algorithms as algo
from agentgym.trainer.rewards import RewardScorer
from agentgym.trajectory import Trajectory


class GreedyBaselines:
    def __init__(self, config: Any, rewards: RewardScorer, rollout: Rollout | None):
        self.config = config
        self.name = config.algorithm.adv_estimator
        self.rewards = rewards
        self.rollout = rollout
        if rollout is not None and not rollout.samples_greedy:
            raise ConfigError(
                f"adv_estimator={self.name} needs one greedy response per prompt as its baseline, but the rollout "
                f"does not sample greedily (its collect takes no `greedy`).", entry="algorithm.adv_estimator",
                fix="use a rollout whose collect(rows, step, greedy=True) samples one response per row at temperature 0 "
                    "(the default agentgym.rollout.build:make_rollout does; wrap a function with "
                    "CallableRollout(fn, samples_greedy=True)), or pick another estimator")
        self._by_group: dict[str, float] = {}
        self._scores: list[float] = []
        self._seconds = 0.0

    def start_step(self) -> None:
        self._by_group.clear()
        self._scores.clear()
        self._seconds = 0.0

    async def collect(self, rows: list[dict[str, Any]], trajectories: Sequence[Trajectory], step: int) -> None:
        assert self.rollout is not None
        start = time.perf_counter()
        greedy = await self.rollout.collect(rows, step, greedy=True)
        groups = list(dict.fromkeys(t.group_id for t in trajectories))
        if len(greedy) != len(rows) or len(groups) != len(rows):
            raise RuntimeError(f"adv_estimator={self.name}: collect(greedy=True) returned {len(greedy)} trajectories "
                               f"and collect() {len(groups)} groups for {len(rows)} rows; both must follow the rows' "
                               f"order, one greedy trajectory and one group per row")
        await self.rewards.prefetch(greedy)
        values = torch.tensor([self.rewards(t) for t in greedy], dtype=torch.float32)
        ob = self.config.reward_model.overlong_buffer
        if ob.enable:
            values = values + algo.overlong_penalty(torch.tensor([len(t.loss_mask) for t in greedy]),
                                                    self.config.data.max_response_length, ob.len, ob.penalty_factor)
        self._by_group.update(zip(groups, values.tolist()))
        self._scores.extend(values.tolist())
        self._seconds += time.perf_counter() - start

    def for_groups(self, group_ids: Sequence[str]) -> torch.Tensor:
        missing = sorted({g for g in group_ids if g not in self._by_group})
        if missing:
            raise ValueError(f"adv_estimator={self.name}: no greedy baseline for group(s) {missing[:3]}; train_step "
                             f"needs the trajectories of fit()'s collect step (which samples the greedy responses)")
        return torch.tensor([self._by_group[g] for g in group_ids], dtype=torch.float32)

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {f"timing_s/{self.name}_greedy": self._seconds}
        if self._scores:
            scores = torch.tensor(self._scores)
            out.update({f"{self.name}/baseline_score/mean": float(scores.mean()),
                        f"{self.name}/baseline_score/max": float(scores.max()),
                        f"{self.name}/baseline_score/min": float(scores.min())})
        return out
