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
    convention in `engines.base`); greedy rows use temperature 1 for it.
    """
    logits = logits.float()
    temperatures = torch.tensor(
        [1.0 if p.greedy else p.temperature for p in params], dtype=logits.dtype, device=logits.device
    ).unsqueeze(1)
    logprobs = torch.log_softmax(logits / temperatures, dim=-1)
    tokens: list[int] = []
    for row, (p, generator) in enumerate(zip(params, generators, strict=True)):
        if p.greedy:
            tokens.append(int(torch.argmax(logprobs[row])))
            continue
        probs = filter_top_k_top_p(logprobs[row].exp(), p.top_k, p.top_p)
        tokens.append(int(torch.multinomial(probs.cpu(), 1, generator=generator)))
    index = torch.tensor(tokens, device=logprobs.device)
    chosen = logprobs.gather(1, index.unsqueeze(1)).squeeze(1)
    return tokens, chosen.tolist()
