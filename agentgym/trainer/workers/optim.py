"""AdamW with warm-up and constant/cosine decay, verl's `optim` keys."""

from __future__ import annotations

import math

import torch

from agentgym.config.schema import OptimConfig


def build_optimizer(params, cfg: OptimConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per training step. Warm-up steps come from `lr_warmup_steps` if >= 0, else from the ratio."""
    total = cfg.total_training_steps if cfg.total_training_steps > 0 else max(total_steps, 1)
    warmup = cfg.lr_warmup_steps if cfg.lr_warmup_steps >= 0 else int(cfg.lr_warmup_steps_ratio * total)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if cfg.warmup_style == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        cosine = 0.5 * (1.0 + math.cos(math.pi * 2.0 * cfg.num_cycles * min(progress, 1.0)))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
