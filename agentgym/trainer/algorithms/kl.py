"""KL between the current policy and a frozen reference, per token, with verl's estimator names."""

from __future__ import annotations

from dataclasses import dataclass

import torch

KL_ESTIMATORS = ("kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3")


def kl_penalty(log_prob: torch.Tensor, ref_log_prob: torch.Tensor, kind: str = "low_var_kl") -> torch.Tensor:
    """k1 (`kl`): log p - log q, unbiased but noisy. k2 (`mse`): 0.5*(log p - log q)^2. k3 (`low_var_kl`):
    q/p - log(q/p) - 1, unbiased, always >= 0 and low-variance (clamped to [-10, 10] against outliers)."""
    diff = log_prob - ref_log_prob
    if kind in ("kl", "k1"):
        return diff
    if kind == "abs":
        return diff.abs()
    if kind in ("mse", "k2"):
        return 0.5 * diff.square()
    if kind in ("low_var_kl", "k3"):
        log_ratio = torch.clamp(-diff, -20.0, 20.0)
        return torch.clamp(torch.exp(log_ratio) - log_ratio - 1, -10.0, 10.0)
    raise ValueError(f"unknown KL estimator '{kind}'; use one of {', '.join(KL_ESTIMATORS)}")


@dataclass
class FixedKLController:
    value: float

    def update(self, current_kl: float, n_steps: int) -> None:
        return None


@dataclass
class AdaptiveKLController:
    """Ziegler et al. (2019): move the coefficient so the measured KL tracks `target_kl`."""

    value: float
    target_kl: float
    horizon: int

    def update(self, current_kl: float, n_steps: int) -> None:
        error = max(min(current_kl / self.target_kl - 1, 0.2), -0.2)
        self.value *= 1 + error * n_steps / self.horizon


def make_kl_controller(kind: str, kl_coef: float, target_kl: float = 0.1, horizon: int = 10000):
    if kind == "fixed":
        return FixedKLController(kl_coef)
    if kind == "adaptive":
        if horizon <= 0:
            raise ValueError(f"algorithm.kl_ctrl.horizon must be positive for the adaptive controller (got {horizon})")
        return AdaptiveKLController(kl_coef, target_kl, horizon)
    raise ValueError(f"unknown algorithm.kl_ctrl.type '{kind}'; use fixed or adaptive")


def apply_kl_in_reward(
    token_rewards: torch.Tensor,
    log_prob: torch.Tensor,
    ref_log_prob: torch.Tensor,
    response_mask: torch.Tensor,
    beta: float,
    kind: str = "kl",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Subtract beta*KL from every model token's reward; returns (new rewards, batch mean of per-sequence token-mean KL)."""
    kld = kl_penalty(log_prob, ref_log_prob, kind) * response_mask
    mean_kl = (kld.sum(-1) / response_mask.sum(-1).clamp_min(1)).mean()
    return token_rewards - beta * kld, mean_kl
