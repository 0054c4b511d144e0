"""Advantage estimators on padded response tensors of shape (batch, response_len).

Multi-turn trajectories interleave model tokens (mask 1) with tool/user tokens (mask 0). Every estimator treats
only mask-1 tokens as decision steps: environment tokens neither receive advantage nor break the flow of returns
or values between the model turns around them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence

import torch

from agentgym.trainer.algorithms.masked import masked_whiten



def _groups(group_ids: Sequence[Hashable]) -> list[list[int]]:
    index: dict[Hashable, list[int]] = defaultdict(list)
    for i, gid in enumerate(group_ids):
        index[gid].append(i)
    return list(index.values())


def place_outcome_rewards(scores: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Token-level rewards with each sequence's score on its last model token (zeros elsewhere)."""
    rewards = torch.zeros_like(response_mask, dtype=torch.float32)
    positions = torch.arange(response_mask.shape[1], device=response_mask.device).expand_as(response_mask)
    last = torch.where(response_mask > 0, positions, torch.full_like(positions, -1)).max(dim=1).values
    has_token = last >= 0
    rows = torch.arange(len(scores), device=scores.device)[has_token]
    rewards[rows, last[has_token]] = scores[has_token].float()
    return rewards


def grpo_outcome_advantage(
    scores: torch.Tensor,
    response_mask: torch.Tensor,
    group_ids: Sequence[Hashable],
    norm_adv_by_std_in_grpo: bool = True,
    epsilon: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-relative advantage (GRPO). With `norm_adv_by_std_in_grpo=False` it is Dr.GRPO's unscaled form.

    A group of one has no baseline and gets advantage 0 (nothing to compare it with).
    """
    scores = scores.float()
    adv = torch.zeros_like(scores)
    for members in _groups(group_ids):
        idx = torch.tensor(members, device=scores.device)
        group = scores[idx]
        if len(members) == 1:
            continue
        centred = group - group.mean()
        if norm_adv_by_std_in_grpo:
            centred = centred / (group.std() + epsilon)
        adv[idx] = centred
    adv_tokens = adv[:, None] * response_mask
    return adv_tokens, adv_tokens


def rloo_advantage(
    scores: torch.Tensor, response_mask: torch.Tensor, group_ids: Sequence[Hashable]
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE leave-one-out: each sample's baseline is the mean score of the other samples of its prompt."""
    scores = scores.float()
    adv = torch.zeros_like(scores)
    for members in _groups(group_ids):
        idx = torch.tensor(members, device=scores.device)
        n = len(members)
        if n == 1:
            continue
        group = scores[idx]
        adv[idx] = group - (group.sum() - group) / (n - 1)
    adv_tokens = adv[:, None] * response_mask
    return adv_tokens, adv_tokens


def discounted_returns(token_rewards: torch.Tensor, response_mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """Return-to-go over model tokens only: discounting counts model steps, environment tokens carry it through."""
    returns = torch.zeros_like(token_rewards, dtype=torch.float32)
    running = torch.zeros(token_rewards.shape[0], dtype=torch.float32, device=token_rewards.device)
    mask = response_mask.float()
    for t in reversed(range(token_rewards.shape[1])):
        m = mask[:, t]
        stepped = token_rewards[:, t] + gamma * running
        running = m * stepped + (1 - m) * (running + token_rewards[:, t])
        returns[:, t] = running
    return returns * mask


def reinforce_plus_plus_advantage(
    token_rewards: torch.Tensor, response_mask: torch.Tensor, gamma: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++: discounted returns whitened across the whole batch (global baseline, no critic)."""
    returns = discounted_returns(token_rewards, response_mask, gamma)
    return masked_whiten(returns, response_mask), returns


def reinforce_plus_plus_baseline_advantage(
    scores: torch.Tensor, response_mask: torch.Tensor, group_ids: Sequence[Hashable]
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++ with a group-mean baseline, then batch whitening."""
    scores = scores.float().clone()
    for members in _groups(group_ids):
        idx = torch.tensor(members, device=scores.device)
        if len(members) > 1:
            scores[idx] = scores[idx] - scores[idx].mean()
    tokens = scores[:, None] * response_mask
    return masked_whiten(tokens, response_mask), tokens


def gae_advantage(
    token_rewards: torch.Tensor,
    values: torch.Tensor,
    response_mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 1.0,
    whiten: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over model tokens; V after the last model token is 0 (episode end).

    Rewards sitting on environment tokens are credited to the preceding model token's transition.
    Returns (advantages, returns) where returns = raw advantages + values (the critic's target).
    """
    b, length = token_rewards.shape
    mask = response_mask.float()
    values = values.float()
    adv = torch.zeros(b, length, dtype=torch.float32, device=values.device)
    next_value = torch.zeros(b, dtype=torch.float32, device=values.device)
    next_adv = torch.zeros_like(next_value)
    pending_reward = torch.zeros_like(next_value)
    for t in reversed(range(length)):
        m = mask[:, t]
        reward = token_rewards[:, t].float() + pending_reward
        delta = reward + gamma * next_value - values[:, t]
        step_adv = delta + gamma * lam * next_adv
        adv[:, t] = step_adv * m
        next_value = m * values[:, t] + (1 - m) * next_value
        next_adv = m * step_adv + (1 - m) * next_adv
        pending_reward = (1 - m) * reward
    returns = (adv + values) * mask
    if whiten:
        adv = masked_whiten(adv, mask)
    return adv, returns


def gpg_advantage(
    scores: torch.Tensor, response_mask: torch.Tensor, group_ids: Sequence[Hashable]
) -> tuple[torch.Tensor, torch.Tensor]:
    """GPG (Chu et al. 2025): alpha * (r - group mean) with alpha = B / (B - M), M the samples whose group has no
    signal (all rewards equal, or a group of one). Rescaling keeps the gradient's size when many groups are flat."""
    scores = scores.float()
    centred = torch.zeros_like(scores)
    invalid = 0
    for members in _groups(group_ids):
        idx = torch.tensor(members, device=scores.device)
        group = scores[idx]
        if len(members) == 1 or bool((group == group[0]).all()):
            invalid += len(members)
            continue
        centred[idx] = group - group.mean()
    alpha = len(scores) / max(len(scores) - invalid, 1)
    adv_tokens = alpha * centred[:, None] * response_mask
    return adv_tokens, adv_tokens


def remax_advantage(
    scores: torch.Tensor, baselines: torch.Tensor, response_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """ReMax (Li et al. 2023): A = r - r(greedy), the baseline being the reward of the prompt's greedy response.
    Returns (advantages, returns) with the returns the sampled score on every model token."""
    if baselines.shape != scores.shape:
        raise ValueError(f"ReMax needs one baseline reward per sample: got {tuple(baselines.shape)} for "
                         f"{tuple(scores.shape)} scores")
    mask = response_mask.float()
    returns = scores.float()[:, None] * mask
    return (scores.float() - baselines.float())[:, None] * mask, returns


def opo_advantage(
    scores: torch.Tensor, response_mask: torch.Tensor, group_ids: Sequence[Hashable]
) -> tuple[torch.Tensor, torch.Tensor]:
    """OPO (Hao et al. 2025, "On-Policy RL with Optimal reward baseline"): A = r - b with the length-weighted group
    baseline b = sum_j l_j r_j / sum_j l_j, l_j the sample's number of model tokens (the baseline that minimises the
    gradient's variance when it grows with length). A group of one gets b = r, i.e. A = 0 (verl: b = 0)."""
    scores = scores.float()
    lengths = response_mask.float().sum(-1)
    adv = torch.zeros_like(scores)
    for members in _groups(group_ids):
        idx = torch.tensor(members, device=scores.device)
        if len(members) == 1:
            continue
        weights = lengths[idx]
        baseline = (weights * scores[idx]).sum() / weights.sum().clamp_min(1e-8)
        adv[idx] = scores[idx] - baseline
    adv_tokens = adv[:, None] * response_mask
    return adv_tokens, adv_tokens


def grpo_passk_advantage(
    scores: torch.Tensor,
    response_mask: torch.Tensor,
    group_ids: Sequence[Hashable],
    norm_adv_by_std_in_grpo: bool = True,
    epsilon: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pass@k training (Chen et al. 2025, arXiv 2503.19595, as in verl's grpo_passk): only the best sample of each
    group learns, with A = r_max - r_second (divided by the group's std when norm_adv_by_std_in_grpo): the
    objective rewards the best of k tries, not the average one. Groups need at least two samples."""
    scores = scores.float()
    adv = torch.zeros_like(scores)
    for members in _groups(group_ids):
        if len(members) < 2:
            raise ValueError(f"grpo_passk compares the best two samples of a group, but group {group_ids[members[0]]!r} "
                             f"has {len(members)}; set actor_rollout_ref.rollout.n >= 2")
        idx = torch.tensor(members, device=scores.device)
        group = scores[idx]
        top, where = torch.topk(group, 2)
        value = top[0] - top[1]
        if norm_adv_by_std_in_grpo:
            value = value / (group.std() + epsilon)
        adv[idx[where[0]]] = value
    adv_tokens = adv[:, None] * response_mask
    return adv_tokens, adv_tokens
