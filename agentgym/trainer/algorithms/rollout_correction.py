"""Truncated importance sampling (TIS) between the rollout engine's and the trainer's log-probs.

The engine samples from pi_rollout (different kernels, precision, sometimes stale weights) while the loss assumes
pi_old. Each token's loss is re-weighted by w = min(pi_old / pi_rollout, threshold), detached (Yao et al. 2025, "Your
efficient RL framework secretly brings you off-policy RL training"). verl's keys: algorithm.rollout_correction.
"""

from __future__ import annotations

import torch

ROLLOUT_IS_LEVELS = ("token", "sequence")


def rollout_is_weights(
    old_log_probs: torch.Tensor,
    rollout_log_probs: torch.Tensor,
    mask: torch.Tensor,
    level: str = "token",
    threshold: float = 2.0,
) -> torch.Tensor:
    """`token`: one weight per token. `sequence`: the product of a sequence's token ratios (exp of the summed log
    ratio) on all its tokens. Truncated above at `threshold`; zero off the mask."""
    if threshold <= 0:
        raise ValueError(f"algorithm.rollout_correction.rollout_is_threshold must be > 0 (got {threshold})")
    mask_f = mask.float()
    log_ratio = (old_log_probs.float() - rollout_log_probs.float()) * mask_f
    if level == "token":
        log_w = log_ratio
    elif level == "sequence":
        log_w = log_ratio.sum(-1, keepdim=True).expand_as(log_ratio)
    else:
        raise ValueError(f"unknown algorithm.rollout_correction.rollout_is '{level}'; use one of "
                         f"{', '.join(ROLLOUT_IS_LEVELS)} or null")
    weights = torch.exp(torch.clamp(log_w, max=float(torch.log(torch.tensor(threshold)))))
    return (weights * mask_f).detach()
