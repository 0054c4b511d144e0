"""The decode step's elementwise work, fused by torch.compile on CUDA.

A 0.5B decode step at batch 64 launched about 1,050 kernels, most of them tiny elementwise ones (RMSNorm alone is
seven per call, rotary embedding five per tensor); their fixed cost was about half the step's GPU time. Compiled,
a norm (with the residual add before it) is one kernel, and so are the rotary embedding of q and k and the MLP's
activation. The math is the model's own (HF Llama/Qwen RMSNorm, rotate-half rope, SiLU gate), so the results match
the unfused modules up to rounding; `FusedOps.load` checks that on the device and returns None when compile is
unavailable or disagrees, and the runner then calls the model's modules as before.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = x.dtype
    x = x.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def add_rms_norm(h: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, eps: float):
    h = h + delta
    return h, rms_norm(h, weight, eps)


def rope_qk(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)

    def rotate(x):
        half = x.shape[-1] // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin

    return rotate(q), rotate(k)


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.silu(gate) * up


class FusedOps:
    """Compiled versions of the functions above (shapes dynamic, so one compile serves every batch bucket);
    `compiled=False` runs them as they are (tests of the fused layer stack on CPU)."""

    def __init__(self, *, compiled: bool = True) -> None:
        compile_ = (lambda fn: torch.compile(fn, dynamic=True, fullgraph=True)) if compiled else (lambda fn: fn)
        self.rms_norm = compile_(rms_norm)
        self.add_rms_norm = compile_(add_rms_norm)
        self.rope_qk = compile_(rope_qk)
        self.silu_mul = compile_(silu_mul)

    @classmethod
    def load(cls, layer: torch.nn.Module, config, device: torch.device, dtype: torch.dtype) -> FusedOps | None:
        """The fused ops, compiled and checked against a decoder layer's own modules (`config`: the text model's),
        or None (with the reason logged)."""
        norm, mlp = layer.input_layernorm, layer.mlp
        if not hasattr(norm, "variance_epsilon") or getattr(config, "hidden_act", None) != "silu":
            log.info("fused decode ops skipped: the model's norm or activation is not RMSNorm/SiLU")
            return None
        try:
            ops = cls()
            gen = torch.Generator(device=device).manual_seed(0)
            hidden, dim = norm.weight.shape[0], 64
            for rows in (3, 5):  # two sizes: the second call must reuse the dynamic compile
                h = torch.randn(rows, hidden, device=device, dtype=dtype, generator=gen)
                d = torch.randn(rows, hidden, device=device, dtype=dtype, generator=gen)
                q = torch.randn(rows, 4, dim, device=device, dtype=dtype, generator=gen)
                cos = torch.randn(rows, dim, device=device, dtype=dtype, generator=gen)
                sin = torch.randn(rows, dim, device=device, dtype=dtype, generator=gen)
                g = torch.randn(rows, 32, device=device, dtype=dtype, generator=gen)
                pairs = [
                    (ops.rms_norm(h, norm.weight, norm.variance_epsilon), norm(h)),
                    (ops.add_rms_norm(h, d, norm.weight, norm.variance_epsilon)[1], norm(h + d)),
                    (ops.rope_qk(q, q, cos, sin)[0], rope_qk(q, q, cos, sin)[0]),
                    (ops.silu_mul(g, g), mlp.act_fn(g) * g),
                ]
                for got, ref in pairs:
                    err = float((got.float() - ref.float()).norm() / ref.float().norm())
                    if err > 2e-2:
                        log.warning("fused decode ops disagree with the model's modules (rel. error %.2e); unfused", err)
                        return None
            return ops
        except Exception as exc:  # no compiler on this machine, or an inductor bug: the modules are always right
            log.warning("fused decode ops unavailable (%r); using the model's modules", exc)
            return None
