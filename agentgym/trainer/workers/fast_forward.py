"""Faster policy forward passes for the trainer: a log-prob LM head and varlen attention for packed rows.

`LogprobLinear`: the LM head computes, in chunks of tokens, only what the losses need (the log-prob of each
response token and optionally the entropy) at the response positions only, so no (tokens x vocab) fp32 logits
tensor exists for the whole micro-batch. With autograd on, each chunk is recomputed in backward
(activation checkpointing of the head), so peak memory is one chunk's logits. The head keeps its class's
parameter (`lm_head.weight`, tied or not), so state-dict names, FSDP sharding and weight sync are unchanged;
without a request it is a plain `nn.Linear`.

`varlen_attention`: the attention function for packed rows (several sequences in one row, positions restarting at
0). Dense-mask SDPA over such a row costs O(T^2) in the row length T; this runs causal attention per sequence
(PyTorch's varlen flash-attention kernel on CUDA when it is there and passes a self-check, else one SDPA call per
sequence), O(sum of L_i^2).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

log = logging.getLogger(__name__)

VARLEN_ATTENTION = "agentgym_varlen"
# Bytes of fp32 logits one head chunk may hold (the chunk's token count follows from the vocabulary size).
HEAD_CHUNK_BYTES = 1 << 31


@dataclass
class HeadRequest:
    positions: torch.Tensor  # (N,) indices into the flattened (batch*len) hidden states
    labels: torch.Tensor  # (N,) token whose log-prob is wanted at each position
    temperature: float = 1.0
    with_entropy: bool = False


def head_chunk(weight: torch.Tensor, bias: torch.Tensor | None, hidden: torch.Tensor, labels: torch.Tensor,
               temperature: float, with_entropy: bool) -> torch.Tensor:
    logits = F.linear(hidden, weight, bias).float()
    if temperature != 1.0:
        logits = logits / temperature
    lse = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - lse
    if not with_entropy:
        return logp.unsqueeze(-1)
    probs = torch.exp(logits - lse.unsqueeze(-1))
    entropy = lse - (probs * logits).sum(-1)
    return torch.stack([logp, entropy], dim=-1)


class LogprobLinear(nn.Linear):
    """An `nn.Linear` LM head that, while a `HeadRequest` is set, returns (1, N, 1|2) [log-prob, entropy]."""

    _agentgym_request: HeadRequest | None = None
    # The per-chunk computation; `compile_model` swaps in a compiled one (fuses cast, log-sum-exp and gather).
    chunk_fn = staticmethod(head_chunk)

    @contextlib.contextmanager
    def request(self, req: HeadRequest):
        self._agentgym_request = req
        try:
            yield
        finally:
            self._agentgym_request = None

    def chunk_tokens(self) -> int:
        return max(64, HEAD_CHUNK_BYTES // (4 * self.out_features))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        req = self._agentgym_request
        if req is None:
            return super().forward(hidden)
        flat = hidden.reshape(-1, hidden.shape[-1]).index_select(0, req.positions)
        chunk = self.chunk_tokens()
        grad = torch.is_grad_enabled() and (flat.requires_grad or self.weight.requires_grad)
        fn = self.chunk_fn
        pieces = []
        for start in range(0, flat.shape[0], chunk):
            args = (self.weight, self.bias, flat[start:start + chunk], req.labels[start:start + chunk],
                    req.temperature, req.with_entropy)
            pieces.append(checkpoint(fn, *args, use_reentrant=False) if grad else fn(*args))
        if not pieces:
            width = 2 if req.with_entropy else 1
            return (flat.sum() * 0.0 + self.weight.sum() * 0.0).reshape(1, 1, 1).expand(1, 0, width)
        return torch.cat(pieces, dim=0).unsqueeze(0)


def install_logprob_head(model: nn.Module) -> bool:
    """Turn the model's output embedding into a `LogprobLinear` in place (same module, same parameters)."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if get is not None else None
    if type(head) is nn.Linear:
        head.__class__ = LogprobLinear
    return isinstance(head, LogprobLinear)


def logprob_head(model: nn.Module) -> LogprobLinear | None:
    get = getattr(model, "get_output_embeddings", None)
    head = get() if get is not None else None
    return head if isinstance(head, LogprobLinear) else None


# ---- varlen attention -------------------------------------------------------------------------------------------

def segment_bounds(position_ids: torch.Tensor) -> torch.Tensor:
    """Cumulative sequence starts (int32, len = sequences + 1) of one packed row whose positions restart at 0."""
    pos = position_ids.reshape(-1)
    starts = torch.nonzero(pos == 0, as_tuple=False).reshape(-1)
    if starts.numel() == 0 or int(starts[0]) != 0:
        starts = torch.cat([starts.new_zeros(1), starts])
    end = torch.tensor([pos.numel()], dtype=starts.dtype, device=starts.device)
    return torch.cat([starts, end]).to(torch.int32)


_host_bounds: tuple[int, int, list[int]] | None = None


def _bounds_list(cu: torch.Tensor) -> list[int]:
    """Host copy of the boundaries, cached for the tensor of the micro-batch (one device sync per forward)."""
    global _host_bounds
    key = (cu.data_ptr(), cu.numel())
    if _host_bounds is None or _host_bounds[:2] != key:
        _host_bounds = (*key, [int(x) for x in cu.tolist()])
    return _host_bounds[2]


def _repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=1)


def _loop_attention(query, key, value, bounds: list[int], scaling):
    """(1, h, T, D) each -> (1, T, h, D): causal SDPA on every sequence of the row."""
    n_rep = query.shape[1] // key.shape[1]
    key, value = _repeat_kv(key, n_rep), _repeat_kv(value, n_rep)
    outs = [
        F.scaled_dot_product_attention(query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], is_causal=True, scale=scaling)
        for s, e in zip(bounds[:-1], bounds[1:]) if e > s
    ]
    return torch.cat(outs, dim=2).transpose(1, 2)


_varlen_state: dict[str, object] = {}


def _varlen_kernel():
    """PyTorch's varlen flash-attention entry point with causal masking, or None (checked once per process)."""
    if "fn" in _varlen_state:
        return _varlen_state["fn"]
    fn = None
    try:
        from torch.nn.attention.varlen import varlen_attn

        params = inspect.signature(varlen_attn).parameters
        causal = ({"is_causal": True} if "is_causal" in params
                  else {"window_size": (-1, 0)} if "window_size" in params else None)
        gqa = "enable_gqa" in params
        if causal is not None:
            def fn(q, k, v, cu, max_len, scale):  # (T, h, D)
                if gqa:
                    extra = {"enable_gqa": True}
                else:
                    n_rep = q.shape[1] // k.shape[1]
                    k, v, extra = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1), {}
                return varlen_attn(q, k, v, cu, cu, max_len, max_len, scale=scale, **causal, **extra)
    except ImportError:
        fn = None
    if fn is not None and torch.cuda.is_available():
        fn = fn if _self_check(fn) else None
    _varlen_state["fn"] = fn
    return fn


def _self_check(fn) -> bool:
    try:
        gen = torch.Generator(device="cuda").manual_seed(0)
        lens = [37, 130, 5, 64]
        total, h, kv, d = sum(lens), 8, 2, 64
        q = torch.randn(1, h, total, d, device="cuda", dtype=torch.bfloat16, generator=gen)
        k = torch.randn(1, kv, total, d, device="cuda", dtype=torch.bfloat16, generator=gen)
        v = torch.randn(1, kv, total, d, device="cuda", dtype=torch.bfloat16, generator=gen)
        bounds = [0]
        for n in lens:
            bounds.append(bounds[-1] + n)
        cu = torch.tensor(bounds, dtype=torch.int32, device="cuda")
        ref = _loop_attention(q, k, v, bounds, None).float()
        got = fn(q[0].transpose(0, 1), k[0].transpose(0, 1), v[0].transpose(0, 1), cu, max(lens), None).float()
        err = float((got - ref[0]).norm() / ref.norm())
        ok = err < 2e-2
        log.info("varlen attention kernel self-check: rel. error %.2e -> %s", err, "use" if ok else "fall back")
        return ok
    except Exception as exc:  # any API or kernel mismatch: use the per-sequence loop
        log.info("varlen attention kernel unavailable (%r); per-sequence SDPA instead", exc)
        return False


def flash_dtype(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.dtype | None:
    """The half dtype the flash kernel should run in, or None (fp32 work goes to the SDPA loop instead).

    Under autocast the projections come out in the autocast dtype but rotary embeddings (fp32 cos/sin, outside
    autocast's op list) promote query and key back to fp32; SDPA is on autocast's list and casts, the flash
    kernel is not, so the cast happens here.
    """
    half = (torch.float16, torch.bfloat16)
    device = query.device.type
    if torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) in half:
        return torch.get_autocast_dtype(device)
    if query.dtype in half and key.dtype == query.dtype and value.dtype == query.dtype:
        return query.dtype
    return None


def varlen_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                     sliding_window=None, **kwargs):
    """transformers attention function: per-sequence causal attention over packed rows (batch 1, boundaries in
    `cu_seq_lens_q`); anything else (a padded batch, a lone dummy token) goes to transformers' SDPA function."""
    cu = kwargs.get("cu_seq_lens_q")
    if cu is None or query.shape[0] != 1 or attention_mask is not None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      sliding_window=sliding_window, **kwargs)
    kernel = _varlen_kernel() if query.is_cuda else None
    dtype = flash_dtype(query, key, value) if kernel is not None else None
    if dtype is not None:
        max_len = kwargs.get("max_length_q")
        if max_len is None:
            b = _bounds_list(cu)
            max_len = max(e - s for s, e in zip(b[:-1], b[1:]))
        q, k, v = (t[0].transpose(0, 1).to(dtype) for t in (query, key, value))
        # No int() here: inside a compiled block max_len is symbolic, and int() would specialize the graph to
        # this batch's longest sequence (a recompile whenever it changes).
        return kernel(q, k, v, cu, max_len, scaling).unsqueeze(0), None
    return _per_sequence_attention(query, key, value, cu, scaling), None


@torch.compiler.disable
def _per_sequence_attention(query, key, value, cu, scaling):
    """The fallback's Python loop over sequences stays eager inside compiled blocks (its host bounds would
    otherwise become guards and recompile every micro-batch)."""
    return _loop_attention(query, key, value, _bounds_list(cu), scaling)


def register_varlen_attention() -> bool:
    try:
        from transformers import AttentionInterface
    except ImportError:
        return False
    AttentionInterface.register(VARLEN_ATTENTION, varlen_attention)
    if torch.cuda.is_available():
        _varlen_kernel()  # resolve (and self-check) now, not inside a torch.compile trace
    return True


def use_varlen_attention(model: nn.Module) -> bool:
    """Switch a loaded transformers model from SDPA to `varlen_attention` (packed micro-batches only)."""
    if not register_varlen_attention():
        return False
    setter = getattr(model, "set_attn_implementation", None)
    try:
        if setter is not None:
            setter(VARLEN_ATTENTION)
        else:
            model.config._attn_implementation = VARLEN_ATTENTION
    except (ValueError, AttributeError, TypeError) as exc:
        log.warning("cannot switch to varlen attention (%s); packed rows keep dense-mask SDPA", exc)
        return False
    return getattr(model.config, "_attn_implementation", None) == VARLEN_ATTENTION
