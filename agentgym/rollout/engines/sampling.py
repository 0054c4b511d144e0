"""Next-token sampling for a batch whose rows each carry their own settings and random generator."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from agentgym.rollout.engines.base import SamplingParams


def filter_top_k_top_p(probs: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Zero the probabilities outside the top-k and the top-p nucleus (unnormalized; multinomial rescales)."""
    if top_k == -1 and top_p >= 1.0:
        return probs
    sorted_probs, order = torch.sort(probs, descending=True)
    keep = torch.ones_like(sorted_probs, dtype=torch.bool)
    if top_k > 0:
        keep[top_k:] = False
    if top_p < 1.0:
        # A token stays if the mass before it is below top_p: the token that crosses the threshold is kept.
        keep &= (torch.cumsum(sorted_probs, dim=-1) - sorted_probs) < top_p
    keep[0] = True
    filtered = torch.zeros_like(probs)
    filtered[order[keep]] = sorted_probs[keep]
    return filtered


def sample_tokens(
    logits: torch.Tensor, params: Sequence[SamplingParams], generators: Sequence[torch.Generator]
) -> tuple[list[int], list[float]]:
    """Pick one token per row of `logits` [B, V] and return it with its logprob.

    The logprob is `log_softmax(logits / temperature)` at the chosen token, before top-k/top-p filtering (the
    convention in `engines.base`); greedy rows use temperature 1 for it. Sampling is Gumbel-max with noise from
    each row's own generator, which lives on the logits' device: the whole batch leaves the device once, as two
    short lists, instead of one vocabulary-sized copy per row.
    """
    logits = logits.float()
    temperatures = torch.tensor(
        [1.0 if p.greedy else p.temperature for p in params], dtype=logits.dtype, device=logits.device
    ).unsqueeze(1)
    logprobs = torch.log_softmax(logits / temperatures, dim=-1)
    scores = logprobs
    sampled = [row for row, p in enumerate(params) if not p.greedy]
    if sampled:
        scores = logprobs.clone()
        for row in sampled:
            p = params[row]
            if p.top_k != -1 or p.top_p < 1.0:
                kept = filter_top_k_top_p(logprobs[row].exp(), p.top_k, p.top_p) > 0
                scores[row].masked_fill_(~kept, float("-inf"))
            uniform = torch.rand(scores.shape[1], generator=generators[row], device=scores.device, dtype=scores.dtype)
            scores[row] -= torch.log(-torch.log(uniform.clamp_(min=torch.finfo(scores.dtype).tiny)))
    index = scores.argmax(dim=-1)
    chosen = logprobs.gather(1, index.unsqueeze(1)).squeeze(1)
    return index.tolist(), chosen.tolist()
