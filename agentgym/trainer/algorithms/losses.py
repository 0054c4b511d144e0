"""Policy, value and entropy losses and their aggregation (verl's `loss_agg_mode` names).

`agg_loss` takes optional global normalisers so a mini-batch split over micro-batches and ranks sums to exactly
the loss of the whole mini-batch: each piece divides by the mini-batch's token or sequence count, not its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agentgym.trainer.algorithms.masked import masked_mean

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def agg_loss(
    loss_mat: torch.Tensor,
    loss_mask: torch.Tensor,
    loss_agg_mode: str,
    *,
    num_tokens: float | torch.Tensor | None = None,
    num_seqs: float | torch.Tensor | None = None,
    loss_scale_factor: float | None = None,
    norm_seq_mean: bool = True,
) -> torch.Tensor:
    """Reduce a (batch, len) loss to a scalar.

    token-mean: sum over all model tokens / token count. seq-mean-token-sum: per-sequence sums averaged over
    sequences. seq-mean-token-mean: per-sequence means averaged. seq-mean-token-sum-norm (Dr.GRPO): per-sequence
    sums divided by a constant (`loss_scale_factor`, default the padded length) and averaged over sequences, so
    long answers are not down-weighted per token. `norm_seq_mean=False` drops the average over sequences:
    sum(seq sums) / scale, the value of verl's agg_loss and of its new engine workers; the default equals what
    verl's default (legacy) FSDP actor backpropagates, which scales each micro-batch by micro/mini batch size.
    """
    mask = loss_mask.to(loss_mat.dtype)
    if loss_agg_mode == "token-mean":
        denom = mask.sum().clamp_min(1) if num_tokens is None else num_tokens
        return (loss_mat * mask).sum() / denom
    seq_denom = loss_mat.shape[0] if num_seqs is None else num_seqs
    seq_sums = (loss_mat * mask).sum(-1)
    if loss_agg_mode == "seq-mean-token-sum":
        return seq_sums.sum() / seq_denom
    if loss_agg_mode == "seq-mean-token-mean":
        return (seq_sums / mask.sum(-1).clamp_min(1)).sum() / seq_denom
    if loss_agg_mode == "seq-mean-token-sum-norm":
        scale = float(loss_mask.shape[-1]) if loss_scale_factor is None else loss_scale_factor
        total = (seq_sums / scale).sum()
        return total / seq_denom if norm_seq_mean else total
    raise ValueError(f"unknown loss_agg_mode '{loss_agg_mode}'; use one of {', '.join(LOSS_AGG_MODES)}")


@dataclass
class PolicyLossOutput:
    loss: torch.Tensor
    clipfrac: torch.Tensor
    ppo_kl: torch.Tensor
    clipfrac_lower: torch.Tensor


def compute_policy_loss(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    clip_ratio_low: float = 0.2,
    clip_ratio_high: float = 0.2,
    clip_ratio_c: float | None = 3.0,
    loss_agg_mode: str = "token-mean",
    token_weights: torch.Tensor | None = None,
    **agg_kwargs,
) -> PolicyLossOutput:
    """PPO clipped surrogate; `clip_ratio_c` (>1) adds dual-clip, bounding the loss of negative-advantage tokens
    whose ratio exploded. `token_weights` (detached) scale each token's loss, e.g. rollout importance weights.
    Metrics (clip fractions, approximate KL) are token means over this batch."""
    log_ratio = torch.clamp(log_prob - old_log_prob, -20.0, 20.0)
    ratio = torch.exp(log_ratio)
    loss_unclipped = -advantages * ratio
    loss_clipped = -advantages * torch.clamp(ratio, 1 - clip_ratio_low, 1 + clip_ratio_high)
    clipped_max = torch.maximum(loss_unclipped, loss_clipped)
    clipfrac = masked_mean(torch.gt(loss_clipped, loss_unclipped).float(), response_mask)
    if clip_ratio_c is not None:
        if clip_ratio_c <= 1.0:
            raise ValueError(f"clip_ratio_c must be > 1 for dual-clip PPO (got {clip_ratio_c}); set null to disable")
        bound = -advantages * clip_ratio_c
        dual = torch.minimum(bound, clipped_max)
        clipfrac_lower = masked_mean((torch.gt(clipped_max, bound) & (advantages < 0)).float(), response_mask)
        pg_losses = torch.where(advantages < 0, dual, clipped_max)
    else:
        clipfrac_lower = torch.zeros((), device=log_prob.device)
        pg_losses = clipped_max
    if token_weights is not None:
        pg_losses = pg_losses * token_weights
    loss = agg_loss(pg_losses, response_mask, loss_agg_mode, **agg_kwargs)
    ppo_kl = masked_mean(-log_ratio, response_mask)
    return PolicyLossOutput(loss, clipfrac.detach(), ppo_kl.detach(), clipfrac_lower.detach())


def compute_value_loss(
    vpreds: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    cliprange_value: float = 0.5,
    loss_agg_mode: str = "token-mean",
    **agg_kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss 0.5*max((V-R)^2, (clip(V)-R)^2); returns (loss, clip fraction)."""
    clipped = old_values + torch.clamp(vpreds - old_values, -cliprange_value, cliprange_value)
    loss_a = (vpreds - returns) ** 2
    loss_b = (clipped - returns) ** 2
    losses = 0.5 * torch.maximum(loss_a, loss_b)
    clipfrac = masked_mean(torch.gt(loss_b, loss_a).float(), response_mask)
    return agg_loss(losses, response_mask, loss_agg_mode, **agg_kwargs), clipfrac.detach()


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical over the last dim, computed in float32 for stability."""
    logits = logits.float()
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(-1)


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    picked = torch.gather(logits, -1, labels.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)
