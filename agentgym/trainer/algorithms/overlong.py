"""DAPO's overlong reward shaping (Yu et al. 2025, sec. 3.4): a soft length penalty instead of a cliff at the limit.

Responses up to max_response_length - buffer_len tokens are untouched; inside the last buffer_len tokens the penalty
grows linearly from 0 to -penalty_factor. Length counts every response token (tool output too), as the length
limit does. verl's keys: reward_model.overlong_buffer.{enable,len,penalty_factor,log}.
"""

from __future__ import annotations

import torch


def overlong_penalty(
    response_lens: torch.Tensor, max_response_length: int, buffer_len: int, penalty_factor: float
) -> torch.Tensor:
    if not 0 < buffer_len <= max_response_length:
        raise ValueError(f"reward_model.overlong_buffer.len must be in (0, data.max_response_length="
                         f"{max_response_length}] (got {buffer_len})")
    exceed = response_lens.float() - (max_response_length - buffer_len)
    return torch.clamp(-exceed / buffer_len * penalty_factor, max=0.0)
