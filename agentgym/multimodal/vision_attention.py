"""Varlen attention for the Qwen2.5-VL vision tower.

The tower attends within windows (and, in a few layers, within whole images) of one packed row of patches. With
transformers' SDPA implementation it runs one SDPA call per window: 64 images of 448 px are 1,024 windows, so a
forward launches about 30,000 small attention calls, and the tower took half of a rollout step on an H200 (the
text model's decode, the other half). transformers passes the window boundaries (`cu_seq_lens_q`) only to
implementations whose name says "flash"; this one is registered under such a name and runs all windows in one
PyTorch varlen flash-attention call (non-causal), on CUDA in half precision after a self-check. Anywhere else
(CPU, fp32, a failed check) it runs the same per-window SDPA loop transformers would, so results do not depend on
whether it is switched on.
"""

from __future__ import annotations

import inspect
import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

VISION_ATTENTION = "agentgym_flash_vision"  # must contain "flash": transformers then passes window boundaries

_kernel_state: dict[str, object] = {}


def _window_loop(query, key, value, bounds: list[int], scaling) -> torch.Tensor:
    """(1, h, T, D) each -> (1, T, h, D): full attention inside every window."""
    outs = [F.scaled_dot_product_attention(query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], scale=scaling)
            for s, e in zip(bounds[:-1], bounds[1:]) if e > s]
    return torch.cat(outs, dim=2).transpose(1, 2)


def _kernel():
    """PyTorch's varlen flash attention, non-causal, or None (resolved and self-checked once per process)."""
    if "fn" in _kernel_state:
        return _kernel_state["fn"]
    fn = None
    if torch.cuda.is_available():
        try:
            from torch.nn.attention.varlen import varlen_attn

            params = inspect.signature(varlen_attn).parameters
            full = {"is_causal": False} if "is_causal" in params else {"window_size": (-1, -1)} if "window_size" in params else {}

            def fn(q, k, v, cu, max_len, scale):  # (T, h, D)
                return varlen_attn(q, k, v, cu, cu, max_len, max_len, scale=scale, **full)

            fn = fn if _agrees(fn) else None
        except ImportError:
            fn = None
    _kernel_state["fn"] = fn
    return fn


def _agrees(fn) -> bool:
    try:
        gen = torch.Generator(device="cuda").manual_seed(0)
        lens = [64, 64, 16, 256]
        bounds = [0]
        for n in lens:
            bounds.append(bounds[-1] + n)
        q, k, v = (torch.randn(1, 8, bounds[-1], 80, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(3))
        ref = _window_loop(q, k, v, bounds, None).float()
        cu = torch.tensor(bounds, dtype=torch.int32, device="cuda")
        got = fn(q[0].transpose(0, 1), k[0].transpose(0, 1), v[0].transpose(0, 1), cu, max(lens), None).float()
        err = float((got - ref[0]).norm() / ref.norm())
        if err < 2e-2:
            return True
        log.warning("varlen vision attention disagrees with SDPA (rel. error %.2e); per-window SDPA instead", err)
    except Exception as exc:  # an API or kernel mismatch: the loop is always right
        log.info("varlen vision attention unavailable (%r); per-window SDPA instead", exc)
    return False


def vision_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                     cu_seq_lens_q=None, max_length_q=None, is_causal: bool = False, **kwargs):
    """transformers attention function for the vision tower: (1, h, T, D) inputs, window starts in `cu_seq_lens_q`."""
    if cu_seq_lens_q is None or attention_mask is not None or is_causal:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    kernel = _kernel() if query.is_cuda else None
    half = (torch.float16, torch.bfloat16)
    if kernel is not None and query.dtype in half and key.dtype == value.dtype == query.dtype:
        if max_length_q is None:
            max_length_q = int((cu_seq_lens_q[1:] - cu_seq_lens_q[:-1]).max())
        q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))
        return kernel(q, k, v, cu_seq_lens_q.to(torch.int32), int(max_length_q), scaling).unsqueeze(0), None
    return _window_loop(query, key, value, [int(x) for x in cu_seq_lens_q.tolist()], scaling), None


def use_vision_attention(model: nn.Module) -> bool:
    """Switch a Qwen2-VL-family model's vision tower to `vision_attention`; False if it has none or refuses."""
    visual = getattr(getattr(model, "model", None), "visual", None)
    if visual is None:
        return False
    try:
        from transformers import AttentionInterface
    except ImportError:
        return False
    AttentionInterface.register(VISION_ATTENTION, vision_attention)
    if torch.cuda.is_available():
        _kernel()  # resolve and self-check now, not inside a forward
    visual.config._attn_implementation = VISION_ATTENTION
    return visual.config._attn_implementation == VISION_ATTENTION
