"""Advantage estimators by verl's `algorithm.adv_estimator` names.

Each estimator takes an AdvantageInputs and returns (advantages, returns) on padded (batch, len) tensors. Adding one
is one `@register_adv_estimator` function and a test; the config schema's `AdvEstimator` must list the name (a test
checks both agree).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch

from agentgym.trainer.algorithms import advantages as adv
from agentgym.trainer.algorithms import turn_credit


@dataclass
class AdvantageInputs:
    token_rewards: torch.Tensor  # (batch, len): outcome score on the last model token, minus any in-reward KL
    response_mask: torch.Tensor
    group_ids: Sequence[Hashable]
    values: torch.Tensor | None = None  # critic values, only for gae
    gamma: float = 1.0
    lam: float = 1.0
    norm_adv_by_std_in_grpo: bool = True
    reward_baselines: torch.Tensor | None = None  # (batch,): each sample's greedy-response reward, only for remax
    # turn-level credit (algorithm.turn_credit): each model token's assistant-turn index (-1 elsewhere)
    token_turns: torch.Tensor | None = None
    turn_mode: str = "outcome"
    turn_gamma: float = 1.0

    @property
    def scores(self) -> torch.Tensor:
        return self.token_rewards.sum(-1)


Estimator = Callable[[AdvantageInputs], tuple[torch.Tensor, torch.Tensor]]
ADV_ESTIMATOR_FNS: dict[str, Estimator] = {}
# Estimators whose baseline is the reward of one greedy response per prompt: the trainer collects those responses
# (`Rollout.collect(rows, step, greedy=True)`) and passes their rewards as `AdvantageInputs.reward_baselines`.
_GREEDY_BASELINE: set[str] = set()


def register_adv_estimator(name: str, *, greedy_baseline: bool = False) -> Callable[[Estimator], Estimator]:
    def wrap(fn: Estimator) -> Estimator:
        if name in ADV_ESTIMATOR_FNS:
            raise ValueError(f"advantage estimator '{name}' is registered twice")
        ADV_ESTIMATOR_FNS[name] = fn
        if greedy_baseline:
            _GREEDY_BASELINE.add(name)
        return fn

    return wrap


def needs_greedy_baseline(name: str) -> bool:
    return name in _GREEDY_BASELINE


def get_adv_estimator(name: str) -> Estimator:
    try:
        return ADV_ESTIMATOR_FNS[name]
    except KeyError:
        raise ValueError(f"unknown algorithm.adv_estimator '{name}'; use one of {', '.join(ADV_ESTIMATOR_FNS)}") from None


@register_adv_estimator("grpo")
def _grpo(x: AdvantageInputs):
    if x.turn_mode != "outcome":
        if x.token_turns is None:
            raise ValueError(f"turn_credit.mode={x.turn_mode} needs each token's turn index (token_turns)")
        fn = (turn_credit.turn_grpo_advantage if x.turn_mode == "turn_grpo"
              else turn_credit.discounted_turn_grpo_advantage)
        return fn(x.token_rewards, x.token_turns, x.response_mask, x.group_ids, x.turn_gamma,
                  x.norm_adv_by_std_in_grpo)
    return adv.grpo_outcome_advantage(x.scores, x.response_mask, x.group_ids, x.norm_adv_by_std_in_grpo)


@register_adv_estimator("rloo")
def _rloo(x: AdvantageInputs):
    return adv.rloo_advantage(x.scores, x.response_mask, x.group_ids)


@register_adv_estimator("reinforce_plus_plus")
def _reinforce_pp(x: AdvantageInputs):
    return adv.reinforce_plus_plus_advantage(x.token_rewards, x.response_mask, x.gamma)


@register_adv_estimator("reinforce_plus_plus_baseline")
def _reinforce_pp_baseline(x: AdvantageInputs):
    return adv.reinforce_plus_plus_baseline_advantage(x.scores, x.response_mask, x.group_ids)


@register_adv_estimator("gae")
def _gae(x: AdvantageInputs):
    if x.values is None:
        raise ValueError("adv_estimator=gae needs critic values; set critic.enable=true")
    return adv.gae_advantage(x.token_rewards, x.values, x.response_mask, x.gamma, x.lam)


@register_adv_estimator("gpg")
def _gpg(x: AdvantageInputs):
    return adv.gpg_advantage(x.scores, x.response_mask, x.group_ids)


@register_adv_estimator("remax", greedy_baseline=True)
def _remax(x: AdvantageInputs):
    if x.reward_baselines is None:
        raise ValueError("adv_estimator=remax needs the reward of a greedy response per prompt; RLTrainer.fit "
                         "collects it (collect(rows, step, greedy=True))")
    return adv.remax_advantage(x.scores, x.reward_baselines, x.response_mask)


@register_adv_estimator("opo")
def _opo(x: AdvantageInputs):
    return adv.opo_advantage(x.scores, x.response_mask, x.group_ids)


@register_adv_estimator("grpo_passk")
def _grpo_passk(x: AdvantageInputs):
    return adv.grpo_passk_advantage(x.scores, x.response_mask, x.group_ids, x.norm_adv_by_std_in_grpo)
