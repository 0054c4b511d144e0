"""Policy losses by verl's `actor_rollout_ref.actor.policy_loss.loss_mode` names.

Each loss takes (old_log_prob, log_prob, advantages, mask, settings) on padded (batch, len) tensors plus the
aggregation normalisers of `agg_loss`, and returns a PolicyLossOutput. Adding one is one `@register_policy_loss`
function and a test; the config schema's `LossMode` must list the name (a test checks both agree).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from agentgym.trainer.algorithms.losses import (
    PolicyLossOutput,
    agg_loss,
    compute_policy_loss,
)
from agentgym.trainer.algorithms.masked import masked_mean


@dataclass(frozen=True)
class PolicyLossSettings:
    clip_ratio_low: float = 0.2
    clip_ratio_high: float = 0.2
    clip_ratio_c: float | None = 3.0
    loss_agg_mode: str = "token-mean"
    clip_cov_ratio: float = 0.0002
    clip_cov_lb: float = 1.0
    clip_cov_ub: float = 5.0
    kl_cov_ratio: float = 0.0002
    ppo_kl_coef: float = 0.1
    tau_pos: float = 1.0
    tau_neg: float = 1.05


PolicyLossFn = Callable[..., PolicyLossOutput]
POLICY_LOSSES: dict[str, PolicyLossFn] = {}


def register_policy_loss(name: str) -> Callable[[PolicyLossFn], PolicyLossFn]:
    def wrap(fn: PolicyLossFn) -> PolicyLossFn:
        if name in POLICY_LOSSES:
            raise ValueError(f"policy loss '{name}' is registered twice")
        POLICY_LOSSES[name] = fn
        return fn

    return wrap


def get_policy_loss(name: str) -> PolicyLossFn:
    try:
        return POLICY_LOSSES[name]
    except KeyError:
        raise ValueError(
            f"unknown actor_rollout_ref.actor.policy_loss.loss_mode '{name}'; use one of {', '.join(POLICY_LOSSES)}"
        ) from None


def _log_ratio(log_prob: torch.Tensor, old_log_prob: torch.Tensor) -> torch.Tensor:
    return torch.clamp(log_prob - old_log_prob, -20.0, 20.0)


def _zero(like: torch.Tensor) -> torch.Tensor:
    return torch.zeros((), device=like.device)


def _weighted(losses: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    return losses if weights is None else losses * weights


@register_policy_loss("vanilla")
def vanilla_loss(old_log_prob, log_prob, advantages, mask, s: PolicyLossSettings, *, token_weights=None, **agg):
    """PPO clip with asymmetric bounds (DAPO's clip-higher: raise clip_ratio_high) and dual-clip."""
    return compute_policy_loss(old_log_prob, log_prob, advantages, mask, clip_ratio_low=s.clip_ratio_low,
                               clip_ratio_high=s.clip_ratio_high, clip_ratio_c=s.clip_ratio_c,
                               loss_agg_mode=s.loss_agg_mode, token_weights=token_weights, **agg)


@register_policy_loss("gspo")
def gspo_loss(old_log_prob, log_prob, advantages, mask, s: PolicyLossSettings, *, token_weights=None, **agg):
    """GSPO (Zheng et al. 2025): one ratio per sequence, s_i = exp(mean_t log(pi/pi_old)), clipped as in PPO.

    The token form sg[s_i] * pi_t / sg[pi_t] has the value s_i and the gradient of s_i's length-normalised sum.
    Aggregated seq-mean-token-mean whatever loss_agg_mode says, as the paper (and verl) do.
    """
    mask_f = mask.to(log_prob.dtype)
    seq_log_ratio = ((log_prob - old_log_prob) * mask_f).sum(-1) / mask_f.sum(-1).clamp_min(1)
    token_log_ratio = log_prob - log_prob.detach() + seq_log_ratio.detach()[:, None]
    ratio = torch.exp(torch.clamp(token_log_ratio, max=10.0))
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - s.clip_ratio_low, 1 + s.clip_ratio_high)
    losses = _weighted(torch.maximum(unclipped, clipped), token_weights)
    loss = agg_loss(losses, mask, "seq-mean-token-mean", **agg)
    clipfrac = masked_mean(torch.gt(clipped, unclipped).float(), mask)
    ppo_kl = masked_mean(-(log_prob - old_log_prob), mask)
    return PolicyLossOutput(loss, clipfrac.detach(), ppo_kl.detach(), _zero(loss))


@register_policy_loss("gpg")
def gpg_loss(old_log_prob, log_prob, advantages, mask, s: PolicyLossSettings, *, token_weights=None, **agg):
    """GPG (Chu et al. 2025): plain policy gradient -A * log pi, no ratio and no clipping."""
    losses = _weighted(-advantages * log_prob, token_weights)
    loss = agg_loss(losses, mask, s.loss_agg_mode, **agg)
    ppo_kl = masked_mean(-(log_prob - old_log_prob), mask)
    return PolicyLossOutput(loss, _zero(loss), ppo_kl.detach(), _zero(loss))


@register_policy_loss("cispo")
def cispo_loss(old_log_prob, log_prob, advantages, mask, s: PolicyLossSettings, *, token_weights=None, **agg):
    """CISPO (MiniMax-M1, 2025): -sg[clip(r, 1-eps_low, 1+eps_high)] * A * log pi. Clipping bounds the weight but,
    unlike PPO, never drops a token's gradient."""
    ratio = torch.exp(_log_ratio(log_prob, old_log_prob))
    clipped = torch.clamp(ratio, 1 - s.clip_ratio_low, 1 + s.clip_ratio_high)
    losses = _weighted(-clipped.detach() * advantages * log_prob, token_weights)
    loss = agg_loss(losses, mask, s.loss_agg_mode, **agg)
    clipfrac = masked_mean(torch.ne(ratio, clipped).float(), mask)
    ppo_kl = masked_mean(-(log_prob - old_log_prob), mask)
    return PolicyLossOutput(loss, clipfrac.detach(), ppo_kl.detach(), _zero(loss))


def _token_covariance(log_prob: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cov(log pi, A) per token, centred over this batch's model tokens (Cui et al. 2025, eq. for Clip-Cov/KL-Cov)."""
    lp = log_prob.detach()
    return (advantages - masked_mean(advantages, mask)) * (lp - masked_mean(lp, mask))


@register_policy_loss("clip_cov")
def clip_cov_loss(old_log_prob, log_prob, advantages, mask, s: PolicyLossSettings, *, token_weights=None,
                  generator: torch.Generator | None = None, **agg):
    """Clip-Cov (Cui et al. 2025, "The Entropy Mechanism of RL for Reasoning LMs"): among tokens PPO did not clip
    whose covariance lies in (clip_cov_lb, clip_cov_ub), detach a random clip_cov_ratio share of all model tokens
    (at least one) so high-covariance tokens stop collapsing entropy."""
    if s.clip_cov_ratio <= 0:
        raise ValueError(f"policy_loss.clip_cov_ratio must be > 0 (got {s.clip_cov_ratio})")
    ratio = torch.exp(_log_ratio(log_prob, old_log_prob))
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - s.clip_ratio_low, 1 + s.clip_ratio_high)
    ppo_clipped = torch.gt(clipped, unclipped) & (mask > 0)
    cov = _token_covariance(log_prob, advantages, mask)
    candidates = ((cov > s.clip_cov_lb) & (cov < s.clip_cov_ub) & (mask > 0) & ~ppo_clipped).nonzero()
    n_pick = min(max(int(s.clip_cov_ratio * float(mask.sum())), 1), len(candidates))
    keep = torch.ones_like(advantages)
    if n_pick:
        order = torch.randperm(len(candidates), generator=generator)[:n_pick].to(candidates.device)
        picked = candidates[order]
        keep[picked[:, 0], picked[:, 1]] = 0.0
    losses = _weighted(torch.maximum(unclipped, clipped) * keep, token_weights)
    loss = agg_loss(losses, mask, s.loss_agg_mode, **agg)
    clipfrac = masked_mean((keep == 0).float(), mask)
    ppo_kl = masked_mean(-(log_prob - old_log_prob), mask)
    return PolicyLossOutput(loss, clipfrac.detach(), ppo_kl.detach(), _zero(loss))


@register_policy_loss("kl_cov")
def kl_cov_loss(old_log_prob, log_prob, advantages, mask, s: PolicyLossSettings, *, token_weights=None, **agg):
    """KL-Cov (Cui et al. 2025): unclipped -A*r, plus ppo_kl_coef*|log r| on the kl_cov_ratio share (at least one)
    of model tokens with the largest Cov(log pi, A)."""
    if s.kl_cov_ratio <= 0:
        raise ValueError(f"policy_loss.kl_cov_ratio must be > 0 (got {s.kl_cov_ratio})")
    log_ratio = log_prob - old_log_prob
    losses = -advantages * torch.exp(log_ratio)
    valid = (mask > 0).nonzero()
    if len(valid):
        cov = _token_covariance(log_prob, advantages, mask)[valid[:, 0], valid[:, 1]]
        k = max(1, int(len(valid) * s.kl_cov_ratio))
        top = valid[torch.topk(cov, k).indices]
        penalty = torch.zeros_like(losses)
        penalty[top[:, 0], top[:, 1]] = 1.0
        losses = losses + penalty * s.ppo_kl_coef * log_ratio.abs()
    losses = _weighted(losses, token_weights)
    loss = agg_loss(losses, mask, s.loss_agg_mode, **agg)
    ppo_kl = masked_mean(log_ratio.abs(), mask)
    return PolicyLossOutput(loss, _zero(loss), ppo_kl.detach(), _zero(loss))


def _seq_mean(per_seq: torch.Tensor, num_seqs: float | torch.Tensor | None) -> torch.Tensor:
    """Mean over the sequences of the whole mini-batch (num_seqs), so micro-batches add up to it."""
    return per_seq.sum() / (per_seq.shape[0] if num_seqs is None else num_seqs)


@register_policy_loss("sapo")
def sapo_loss(old_log_prob, log_prob, advantages, mask, s: PolicyLossSettings, *, token_weights=None, **agg):
    """SAPO (Qwen, 2025, arXiv 2511.20347): a smooth gate instead of a hard clip, -f(r) * A with
    f(r) = sigmoid(tau * (r - 1)) * 4 / tau, tau = tau_pos for A > 0 and tau_neg otherwise. f'(1) = 1, so on-policy
    it is the plain policy gradient; away from r = 1 the gradient fades instead of stopping. Aggregated
    seq-mean-token-mean whatever loss_agg_mode says, as the paper (and verl) do."""
    if s.tau_pos <= 0 or s.tau_neg <= 0:
        raise ValueError(f"SAPO's temperatures actor.tau_pos and actor.tau_neg must be > 0 (got {s.tau_pos}, {s.tau_neg})")
    log_ratio = _log_ratio(log_prob, old_log_prob)
    ratio = torch.exp(log_ratio)
    tau = torch.where(advantages > 0, torch.full_like(advantages, s.tau_pos), torch.full_like(advantages, s.tau_neg))
    gate = torch.sigmoid(tau * (ratio - 1.0)) * (4.0 / tau)
    losses = _weighted(-gate * advantages, token_weights)
    loss = agg_loss(losses, mask, "seq-mean-token-mean", **agg)
    ppo_kl = masked_mean(-log_ratio, mask)
    return PolicyLossOutput(loss, _zero(loss), ppo_kl.detach(), _zero(loss))


@register_policy_loss("geo_mean")
def geo_mean_loss(old_log_prob, log_prob, advantages, mask, s: PolicyLossSettings, *, token_weights=None,
                  num_seqs=None, **agg):
    """GMPO (Zhao et al. 2025, arXiv 2507.20673): the geometric mean of the token ratios instead of their
    arithmetic mean, so one outlier token cannot dominate the sequence's update. Per sequence,
    -A_i * exp(mean_t sgn(A_i) * min(sgn(A_i) log r_t, sgn(A_i) clip(log r_t, -clip_ratio_low, clip_ratio_high))),
    A_i the sequence's mean advantage, averaged over sequences (loss_agg_mode is not used). The clip bounds apply
    to log r, as in verl; the paper uses (-0.4, 0.4). Rollout weights enter as their per-sequence geometric mean."""
    mask_f = mask.to(log_prob.dtype)
    lengths = mask_f.sum(-1)
    log_ratio = log_prob - old_log_prob
    clamped = torch.clamp(log_ratio, -s.clip_ratio_low, s.clip_ratio_high)
    sign = torch.sign(advantages)
    pessimistic = sign * torch.minimum(sign * log_ratio, sign * clamped)
    seq_ratio = torch.exp((pessimistic * mask_f).sum(-1) / (lengths + 1e-8))
    seq_adv = (advantages * mask_f).sum(-1) / (lengths + 1e-8)
    per_seq = -seq_adv * seq_ratio
    if token_weights is not None:
        per_seq = per_seq * torch.exp((torch.log(token_weights + 1e-10) * mask_f).sum(-1) / (lengths + 1e-8))
    loss = _seq_mean(per_seq, num_seqs)
    clipped = torch.ne(log_ratio, clamped).float()
    clipfrac = masked_mean(clipped * (advantages > 0), mask)
    clipfrac_lower = masked_mean(clipped * (advantages < 0), mask)
    ppo_kl = masked_mean(-log_ratio, mask)
    return PolicyLossOutput(loss, clipfrac.detach(), ppo_kl.detach(), clipfrac_lower.detach())
