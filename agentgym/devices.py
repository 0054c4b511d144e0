"""Device and dtype names from the run config, resolved for torch: shared by the rollout engines and the trainer."""

from __future__ import annotations

import torch

from agentgym.errors import ConfigError

_DTYPES = {
    "fp32": torch.float32, "float32": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16,
}


def resolve_dtype(name: str) -> torch.dtype:
    try:
        return _DTYPES[name]
    except KeyError:
        raise ConfigError(f"unknown dtype '{name}'.", fix=f"use one of {sorted(_DTYPES)}") from None


def device_type(preference: str) -> str:
    """`trainer.device` resolved to "cpu" or "cuda" (auto: CUDA when one is visible)."""
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return "cpu"
    return "cuda"
