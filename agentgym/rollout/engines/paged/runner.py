"""The forward pass over the paged KV cache, for decoder-only transformers models of the Llama/Qwen family.

The model's own modules (embedding, projections, norms, MLPs, LM head) run unchanged; only attention is
replaced, because it has to read and write the paged cache. Two entry points:

- `prefill`: new tokens of several sequences packed into one row, each attending causally to its cached
  prefix plus itself (PyTorch's varlen flash kernel on CUDA when it passes a self-check, else SDPA per
  sequence). Eager: its shapes change every call.
- `decode`: up to `decode_steps` tokens for each of B sequences, each step attending over their block tables
  and sampling the token the next step feeds. On CUDA each (batch bucket, context bucket, sampling kind) is
  captured once as a CUDA graph and replayed, which removes the Python and kernel-launch overhead that
  dominates a small model's decode step; several steps per replay also spread the host's per-call work (staging,
  the host copy, the scheduler) over several tokens.

Weights are used in place, so a weight update (a copy into the same parameters) needs no re-capture.
"""

from __future__ import annotations

import bisect
import logging
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from agentgym.rollout.engines.paged.blocks import NULL_BLOCK
from agentgym.rollout.engines.paged.decode_attention import paged_decode_attention
from agentgym.rollout.engines.paged.fused import FusedOps, rope_qk
from agentgym.rollout.engines.paged.sampler import SamplingInputs, sample

log = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "qwen3", "mistral", "qwen2_5_vl")
_STATIC_ROPE = (None, "default", "linear", "llama3", "yarn")


def buckets(limit: int) -> list[int]:
    """1, 2, 3, 4, 6, 8, 12, 16, ... (powers of two and the midpoints between them), up to and including `limit`."""
    out, p = [], 1
    while True:
        for v in (p, p + p // 2) if p >= 2 else (p,):
            if v >= limit:
                out.append(limit)
                return sorted(set(out))
            out.append(v)
        p *= 2


def attention_shape(config) -> tuple[int, int, int]:
    """(query heads, key/value heads, head dim) of a Llama-family config."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return heads, kv_heads, getattr(config, "head_dim", None) or config.hidden_size // heads


def text_model(model: torch.nn.Module) -> torch.nn.Module | None:
    """The decoder stack (embed_tokens, layers, norm, rotary_emb): `model.model`, or for a vision-language model
    its `language_model`."""
    inner = getattr(model, "model", None)
    return getattr(inner, "language_model", inner)


def unsupported_reason(model: torch.nn.Module) -> str | None:
    """Why the paged runner cannot run this model, or None if it can."""
    kind = getattr(model.config, "model_type", None)
    if kind not in SUPPORTED_MODEL_TYPES:
        return f"model type {kind!r} is not one of {list(SUPPORTED_MODEL_TYPES)}"
    config = model.config.get_text_config()
    uses_window = getattr(config, "use_sliding_window", kind == "mistral") and getattr(config, "sliding_window", None)
    layer_types = set(getattr(config, "layer_types", None) or ["full_attention"])
    if uses_window or layer_types != {"full_attention"}:
        return "sliding-window attention layers are not supported"
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type")) if isinstance(rope, dict) else None
    if rope_type not in _STATIC_ROPE:
        return f"rope type {rope_type!r} depends on the sequence length; only {_STATIC_ROPE[1:]} are supported"
    inner = text_model(model)
    if inner is None or not all(hasattr(inner, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb")):
        return "the model does not have the embed_tokens / layers / norm / rotary_emb layout of Llama-family models"
    attn = inner.layers[0].self_attn
    if not all(hasattr(attn, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj")):
        return "attention without q_proj / k_proj / v_proj / o_proj"
    return None


@dataclass
class PrefillBatch:
    """Packed new tokens of several sequences (host lists; `runner.prefill` moves them to the device)."""

    tokens: list[int]
    positions: list[int]
    slots: list[int]  # cache slot of each new token
    context_slots: list[int]  # every sequence's whole context (cached prefix + new tokens), packed
    query_lens: list[int]
    context_lens: list[int]
    # Vision-language models: the three rotary position rows of every token (None: `positions` in all three),
    # and the rows of `embeds` (vision tower output) that replace the token embeddings at `embed_index`.
    mrope: list[list[int]] | None = None
    embed_index: list[int] = field(default_factory=list)
    embeds: list[torch.Tensor] = field(default_factory=list)


@dataclass
class DecodeRow:
    """One sequence in a decode call: the token it feeds at `position`, its block table row, sampling settings,
    how many tokens it may take in this call (`steps` >= 1) and one uniform draw per step."""

    token: int
    position: int
    table_row: int
    inv_temperature: float
    greedy: bool
    top_k: int
    top_p: float
    steps: int
    uniforms: list[float]
    rope_delta: int = 0  # vision-language models: rotary position minus cache position (`paged/images.py`)


class PagedModelRunner:
    """Owns the KV cache tensors and runs the model over them."""

    def __init__(self, model: torch.nn.Module, *, num_blocks: int, block_size: int, max_batch: int,
                 max_blocks_per_seq: int, cuda_graphs: bool, decode_steps: int = 1, fuse: bool = True):
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"the paged engine cannot run this model: {reason}; use the `dynamic` backend")
        self.model = model
        inner = text_model(model)
        cfg = model.config.get_text_config()
        self.embed, self.layers, self.norm = inner.embed_tokens, list(inner.layers), inner.norm
        self.lm_head = model.get_output_embeddings()
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.heads, self.kv_heads, self.head_dim = attention_shape(cfg)
        # This rank's heads: all of them, or its share when the projections are split (`engines.tensor_parallel`).
        attn = self.layers[0].self_attn
        self.heads = attn.q_proj.out_features // self.head_dim
        self.kv_heads = attn.k_proj.out_features // self.head_dim
        # Tensor parallelism: replaces each step's sampled tokens with the group leader's (in place), so every rank
        # of a replica feeds the same tokens.
        self.share_tokens = None
        self.scale = float(getattr(self.layers[0].self_attn, "scaling", self.head_dim**-0.5))
        self.vocab = cfg.vocab_size
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.max_batch = max_batch
        self.max_blocks_per_seq = max_blocks_per_seq
        self.max_positions = max_blocks_per_seq * block_size
        if not 1 <= decode_steps <= block_size:
            raise ValueError(f"decode_steps must be between 1 and block_size ({block_size}), got {decode_steps}")
        self.decode_steps = decode_steps
        self._row_fields = 9 + decode_steps
        # [layer, k|v, kv head, slot, head dim]: a layer's keys for a block table gather as one indexing op.
        self._kv_shape = (len(self.layers), 2, self.kv_heads, num_blocks * block_size, self.head_dim)
        self.kv = torch.zeros(self._kv_shape, dtype=self.dtype, device=self.device)
        with torch.inference_mode():
            positions = torch.arange(self.max_positions, device=self.device).unsqueeze(0)
            probe = torch.zeros(1, dtype=self.dtype, device=self.device)
            cos, sin = inner.rotary_emb(probe, positions)
        self.cos, self.sin = cos[0].to(self.dtype), sin[0].to(self.dtype)
        self._mrope_select = _mrope_select(getattr(inner.rotary_emb, "mrope_section", None), self.head_dim, self.device)
        self.image_token_id = getattr(model.config, "image_token_id", None) if self._mrope_select is not None else None
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda"
        self.batch_buckets = buckets(max_batch)
        self.block_buckets = buckets(max_blocks_per_seq)
        self._graphs: dict[tuple[int, int, bool], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.cuda_graphs else None
        self.graph_captures = 0
        self.capture_seconds = 0.0
        self._flash = _flash_prefill_kernel(self.device) if self.device.type == "cuda" else None
        self._paged_kernel = paged_decode_attention if self.device.type == "cuda" else None
        self._fused = (FusedOps.load(self.layers[0], cfg, self.device, self.dtype)
                       if self.device.type == "cuda" and fuse else None)
        dev = self.device
        self._tokens = torch.zeros(max_batch, dtype=torch.long, device=dev)
        self._positions = torch.zeros(max_batch, dtype=torch.long, device=dev)
        self._deltas = torch.zeros(max_batch, dtype=torch.long, device=dev)
        self._steps = torch.ones(max_batch, dtype=torch.long, device=dev)
        self._lens = torch.ones(max_batch, dtype=torch.long, device=dev)
        self._tables = torch.zeros(max_batch, max_blocks_per_seq, dtype=torch.long, device=dev)
        self._sampling = SamplingInputs.empty(max_batch, dev)
        self._uniforms = torch.zeros(max_batch, decode_steps, dtype=torch.float32, device=dev)
        self._staging = torch.zeros(max_batch * self._row_fields, dtype=torch.float64, device=dev)
        # One block table per admitted sequence (row `max_batch` stays all scratch, for padding rows).
        self._row_tables = torch.zeros(max_batch + 1, max_blocks_per_seq, dtype=torch.long, device=dev)
        if self._paged_kernel is not None and not self._kernel_agrees():
            self._paged_kernel = None

    def _kernel_agrees(self) -> bool:
        """The Triton decode kernel against the gather path on random cache contents (then the cache is zeroed)."""
        try:
            gen = torch.Generator(device=self.device).manual_seed(0)
            rows, blocks = min(4, self.max_batch), min(5, self.max_blocks_per_seq)
            layer = self.kv[0]
            layer.normal_(generator=gen)
            tables = torch.randint(1, self.num_blocks, (rows, blocks), device=self.device, generator=gen)
            lens = torch.randint(1, blocks * self.block_size + 1, (rows,), device=self.device, generator=gen)
            q = torch.randn(rows, self.heads, self.head_dim, device=self.device, dtype=self.dtype, generator=gen)
            self._lens[:rows] = lens
            self._tables[:rows, :blocks] = tables
            ref = self._gather_attention(self._tables[:rows, :blocks], self._lens[:rows], rows, blocks)(q, layer[0], layer[1])
            got = self._paged_kernel(q, layer[0], layer[1], self._tables[:rows, :blocks], self._lens[:rows],
                                     self.scale, self.block_size)
            ref, got = ref.reshape(rows, -1).float(), got.reshape(rows, -1).float()
            err = float((got - ref).norm() / ref.norm())
            if err < 2e-2:
                return True
            log.warning("paged decode kernel disagrees with the reference (rel. error %.2e); using the gather path", err)
        except Exception as exc:  # a Triton or driver problem: the gather path is always correct
            log.warning("paged decode kernel unavailable (%r); using the gather path", exc)
        finally:
            self.kv.zero_()
        return False

    # ---- releasing the cache ---------------------------------------------------------------------------------

    @property
    def cache_resident(self) -> bool:
        """Whether the KV cache is allocated (False between `release_cache` and `restore_cache`)."""
        return self.kv.numel() > 0

    def release_cache(self) -> None:
        """Free the KV cache and the captured decode graphs with their memory pool (the graphs hold the cache's
        address, so they cannot outlive it); the weights and the small staging buffers stay."""
        self._graphs.clear()
        self.kv = torch.empty(0, dtype=self.dtype, device=self.device)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()

    def restore_cache(self) -> None:
        """A zeroed KV cache of the same shape (new graphs are captured as on start: `capture_all`, or on first
        use)."""
        if self.cache_resident:
            return
        self.kv = torch.zeros(self._kv_shape, dtype=self.dtype, device=self.device)
        if self.cuda_graphs:
            self._pool = torch.cuda.graph_pool_handle()

    # ---- shared layer stack ----------------------------------------------------------------------------------

    def _forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, slots: torch.Tensor, attend,
                 *, final_norm: bool = True) -> torch.Tensor:
        """Hidden states [T, hidden] (after the final norm) from input embeddings `h` and each token's rotary
        cos/sin; `attend(q, k_cache, v_cache)` -> [T, heads, dim]."""
        if self._fused is not None:
            return self._fused_forward(h, cos, sin, slots, attend, final_norm=final_norm)
        t = h.shape[0]
        for index, layer in enumerate(self.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(h)
            q, k, v = self._qkv(attn, x, t)
            q, k = rope_qk(q, k, cos, sin)
            out = self._attend(index, q, k, v, slots, attend)
            h = h + attn.o_proj(out.reshape(t, self.heads * self.head_dim))
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        return self.norm(h) if final_norm else h

    @property
    def fused_elementwise(self) -> bool:
        """Whether the decode step runs the fused element-wise kernels (the model's layers allowed them)."""
        return self._fused is not None

    def _fused_forward(self, h, cos, sin, slots, attend, *, final_norm: bool) -> torch.Tensor:
        """`_forward` with each residual add + norm, the rope of q and k, and the MLP's activation as one kernel."""
        ops = self._fused
        t = h.shape[0]
        delta = None
        for index, layer in enumerate(self.layers):
            attn, mlp = layer.self_attn, layer.mlp
            norm = layer.input_layernorm
            if delta is None:
                x = ops.rms_norm(h, norm.weight, norm.variance_epsilon)
            else:
                h, x = ops.add_rms_norm(h, delta, norm.weight, norm.variance_epsilon)
            q, k, v = self._qkv(attn, x, t)
            q, k = ops.rope_qk(q, k, cos, sin)
            out = self._attend(index, q, k, v, slots, attend)
            norm = layer.post_attention_layernorm
            h, x = ops.add_rms_norm(h, attn.o_proj(out.reshape(t, self.heads * self.head_dim)), norm.weight,
                                    norm.variance_epsilon)
            delta = mlp.down_proj(ops.silu_mul(mlp.gate_proj(x), mlp.up_proj(x)))
        if final_norm:
            return ops.add_rms_norm(h, delta, self.norm.weight, self.norm.variance_epsilon)[1]
        return h + delta

    def _qkv(self, attn, x: torch.Tensor, t: int):
        q = attn.q_proj(x).view(t, self.heads, self.head_dim)
        k = attn.k_proj(x).view(t, self.kv_heads, self.head_dim)
        v = attn.v_proj(x).view(t, self.kv_heads, self.head_dim)
        if hasattr(attn, "q_norm"):
            q, k = attn.q_norm(q), attn.k_norm(k)
        return q, k, v

    def _attend(self, index: int, q, k, v, slots, attend) -> torch.Tensor:
        """Write the new keys/values into layer `index`'s cache, then attend over it."""
        k_cache, v_cache = self.kv[index, 0], self.kv[index, 1]
        k_cache.index_copy_(1, slots, k.transpose(0, 1).to(self.dtype))
        v_cache.index_copy_(1, slots, v.transpose(0, 1).to(self.dtype))
        return attend(q, k_cache, v_cache)

    # ---- prefill ---------------------------------------------------------------------------------------------

    def prefill(self, batch: PrefillBatch) -> None:
        """Fill the cache with the keys and values of the batch's tokens (no logits: decode steps sample)."""
        dev = self.device
        as_long = lambda xs: torch.tensor(xs, dtype=torch.long).to(dev, non_blocking=True)  # noqa: E731
        tokens, positions, slots = as_long(batch.tokens), as_long(batch.positions), as_long(batch.slots)
        context = as_long(batch.context_slots)
        cu_q = _cumulative(batch.query_lens, dev)
        cu_k = _cumulative(batch.context_lens, dev)
        max_q, max_k = max(batch.query_lens), max(batch.context_lens)

        def attend(q, k_cache, v_cache):
            k = k_cache[:, context].transpose(0, 1)
            v = v_cache[:, context].transpose(0, 1)
            if self._flash is not None:
                return self._flash(q, k, v, cu_q, cu_k, max_q, max_k, self.scale)
            return _prefix_attention(q, k, v, batch.query_lens, batch.context_lens, self.scale)

        h = self.embed(tokens)
        if batch.embed_index:
            index = as_long(batch.embed_index)
            h = h.index_copy(0, index, torch.cat(batch.embeds).to(h.dtype))
        if batch.mrope is not None:
            cos, sin = self.mrope_cos_sin(as_long(batch.mrope))
        else:
            cos, sin = self.cos[positions], self.sin[positions]
        self._forward(h, cos, sin, slots, attend, final_norm=False)

    def mrope_cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin [T, head_dim] for [3, T] positions: each rotary dimension takes the position of its section
        (temporal, height, width), as the model's multimodal rotary embedding does."""
        index = positions[self._mrope_select].T
        return self.cos.gather(0, index), self.sin.gather(0, index)

    def image_embeddings(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> list[torch.Tensor]:
        """The vision tower's output for each image (rows = the image's pad tokens), in the LM's dtype."""
        out = self.model.model.get_image_features(pixel_values.to(self.device), grid_thw.to(self.device),
                                                  return_dict=True)
        return [e.to(self.dtype) for e in out.pooler_output]

    # ---- decode ----------------------------------------------------------------------------------------------

    @property
    def decode_attention_kind(self) -> str:
        return "triton-paged" if self._paged_kernel is not None else "gather"

    def _decode_attention(self, rows: int, blocks: int):
        tables = self._tables[:rows, :blocks]
        lens = self._lens[:rows]
        if self._paged_kernel is not None:
            kernel, bs = self._paged_kernel, self.block_size
            return lambda q, k_cache, v_cache: kernel(q, k_cache, v_cache, tables, lens, self.scale, bs)
        return self._gather_attention(tables, lens, rows, blocks)

    def _gather_attention(self, tables: torch.Tensor, lens: torch.Tensor, rows: int, blocks: int):
        group = self.heads // self.kv_heads
        width = blocks * self.block_size
        masked = torch.arange(width, device=self.device).unsqueeze(0) >= lens.unsqueeze(1)  # [B, L]
        masked = masked.view(1, rows, 1, width)

        def attend(q, k_cache, v_cache):
            shape = (self.kv_heads, self.num_blocks, self.block_size, self.head_dim)
            k = k_cache.view(shape)[:, tables].view(self.kv_heads * rows, width, self.head_dim)
            v = v_cache.view(shape)[:, tables].view(self.kv_heads * rows, width, self.head_dim)
            qg = q.view(rows, self.kv_heads, group, self.head_dim).transpose(0, 1).reshape(-1, group, self.head_dim)
            scores = torch.bmm(qg, k.transpose(1, 2)).float().mul_(self.scale)
            scores = scores.view(self.kv_heads, rows, group, width).masked_fill_(masked, float("-inf"))
            probs = torch.softmax(scores, dim=-1).to(v.dtype).view(-1, group, width)
            out = torch.bmm(probs, v).view(self.kv_heads, rows, group, self.head_dim)
            return out.transpose(0, 1)

        return attend

    def _decode_step(self, rows: int, blocks: int, filtered: bool) -> torch.Tensor:
        """From the staged inputs: `decode_steps` forwards, each sampling the token the next one feeds.

        Returns [decode_steps, rows, 2] (token, logprob) float64. Row i takes `steps[i]` real steps (its budget:
        max tokens, context length); its later steps repeat the last position and write to the scratch block, so
        they touch no other sequence's cache. A row that samples a stop token keeps going inside the call; the
        host discards what follows it, and those keys/values sit past the sequence's end, never registered.
        """
        self._unpack(rows, blocks)
        bs = self.block_size
        tables = self._tables[:rows, :blocks]
        first, steps = self._positions[:rows], self._steps[:rows]
        tokens = self._tokens[:rows]
        outs = []
        for j in range(self.decode_steps):
            positions = first + torch.clamp(steps - 1, max=j)
            block = tables.gather(1, (positions // bs).unsqueeze(1)).squeeze(1)
            slots = torch.where(steps > j, block * bs + positions % bs, NULL_BLOCK * bs)
            self._lens[:rows].copy_(positions + 1)
            attend = self._decode_attention(rows, blocks)
            rope = positions + self._deltas[:rows]
            hidden = self._forward(self.embed(tokens), self.cos[rope], self.sin[rope], slots, attend)
            logits = self.lm_head(hidden)
            sampling = self._sampling.rows(rows)
            sampling.uniform = self._uniforms[:rows, j]
            tokens, logprobs = sample(logits, sampling, filtered=filtered)
            if self.share_tokens is not None:
                tokens = self.share_tokens(tokens.contiguous())
            outs.append(torch.stack([tokens.double(), logprobs.double()], dim=1))
        return torch.stack(outs)

    def decode(self, rows_in: list[DecodeRow], *, filtered: bool) -> list[list[tuple[int, float]]]:
        """Advance each row by up to `decode_steps` tokens (its `steps`): one graph replay and one host copy.

        Returns, per row, its `steps` sampled (token, logprob) pairs in order; its block table row (see
        `set_table_rows`) must already hold blocks for positions up to `position + steps - 1`."""
        n = len(rows_in)
        rows = self.batch_buckets[bisect.bisect_left(self.batch_buckets, n)]
        if self._paged_kernel is not None:
            # The kernel reads each row's table only up to its length, so one width serves every context:
            # one graph per batch bucket, all captured early, instead of new captures as contexts grow.
            blocks = self.max_blocks_per_seq
        else:
            needed = max(r.position + r.steps - 1 for r in rows_in) // self.block_size + 1
            blocks = self.block_buckets[bisect.bisect_left(self.block_buckets, needed)]
        self._stage(rows_in, rows)
        key = (rows, blocks, filtered)
        if not self.cuda_graphs:
            out = self._decode_step(rows, blocks, filtered)
        elif key in self._graphs:
            graph, out = self._graphs[key]
            graph.replay()
        else:
            out = self._capture(key)
        host = out[:, :n].cpu().tolist()  # [steps][row] -> [token, logprob]
        return [[(int(host[j][i][0]), host[j][i][1]) for j in range(r.steps)] for i, r in enumerate(rows_in)]

    def set_table_rows(self, updates: list[tuple[int, int, list[int]]]) -> None:
        """Write block ids into the device-side block tables: (table row, first column, block ids) each.

        Tables live on the device and change only when a sequence gets a block (every `block_size` tokens), so a
        decode step sends each row's table index, not its table."""
        rows: list[int] = []
        cols: list[int] = []
        values: list[int] = []
        for row, start, blocks in updates:
            rows += [row] * len(blocks)
            cols += range(start, start + len(blocks))
            values += blocks
        if values:
            index = torch.tensor([rows, cols], dtype=torch.long).to(self.device, non_blocking=True)
            self._row_tables.index_put_((index[0], index[1]), torch.tensor(values, dtype=torch.long).to(self.device))

    def _stage(self, rows_in: list[DecodeRow], rows: int) -> None:
        """Copy this call's per-row inputs to the device as one [rows, fields] float64 block (exact for ids); the
        decode step unpacks it into the static buffers. Rows past `len(rows_in)` are scratch padding.

        One host list and one copy: per-row tensor writes cost more host time than a small model's whole step.
        """
        k = self.decode_steps
        flat: list[float] = []
        for r in rows_in:
            flat += (r.token, r.position, r.table_row, r.inv_temperature, r.greedy, r.top_k, r.top_p, r.steps,
                     r.rope_delta)
            flat += r.uniforms
            flat += [0.0] * (k - len(r.uniforms))
        flat += ([0, 0, self.max_batch, 1.0, 1, self.vocab, 1.0, 1, 0] + [0.0] * k) * (rows - len(rows_in))
        host = torch.frombuffer(array("d", flat), dtype=torch.float64)
        self._staging[: rows * self._row_fields].copy_(host)

    def _unpack(self, rows: int, blocks: int) -> None:
        staged = self._staging[: rows * self._row_fields].view(rows, self._row_fields)
        self._tokens[:rows].copy_(staged[:, 0])
        self._positions[:rows].copy_(staged[:, 1])
        self._tables[:rows, :blocks].copy_(self._row_tables[staged[:, 2].long(), :blocks])
        s = self._sampling
        s.inv_temperature[:rows].copy_(staged[:, 3])
        s.greedy[:rows].copy_(staged[:, 4] != 0)
        s.top_k[:rows].copy_(staged[:, 5])
        s.top_p[:rows].copy_(staged[:, 6])
        self._steps[:rows].copy_(staged[:, 7])
        self._deltas[:rows].copy_(staged[:, 8])
        self._uniforms[:rows].copy_(staged[:, 9:])

    def capture_all(self) -> None:
        """Capture the unfiltered decode graph of every batch bucket now, largest first (smaller graphs reuse its
        memory pool), so no request waits on a capture (0.5-1 s each for a 0.5B model) in the middle of a rollout.
        Only with the Triton kernel, where one table width serves every context."""
        if not self.cuda_graphs or self._paged_kernel is None:
            return
        with torch.inference_mode():
            for rows in reversed(self.batch_buckets):
                key = (rows, self.max_blocks_per_seq, False)
                if key not in self._graphs:
                    self._stage([], rows)  # all padding: scratch table row, scratch slot
                    self._capture(key)
            torch.cuda.synchronize(self.device)

    def _capture(self, key: tuple[int, int, bool]) -> torch.Tensor:
        """Run the step once eagerly (this also computes the current step), then capture it and replay."""
        rows, blocks, filtered = key
        started = time.perf_counter()
        stream = torch.cuda.Stream(device=self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            self._decode_step(rows, blocks, filtered)  # warm-up: writes this step's keys/values, same values
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            out = self._decode_step(rows, blocks, filtered)
        self._graphs[key] = (graph, out)
        self.graph_captures += 1
        self.capture_seconds += time.perf_counter() - started
        graph.replay()
        return out


def _mrope_select(sections: list[int] | None, head_dim: int, device: torch.device) -> torch.Tensor | None:
    """For each rotary dimension, which of the three position rows it rotates by (None: a text-only model)."""
    if not sections:
        return None
    per_frequency = [i for i, n in enumerate(sections) for _ in range(n)]
    if len(per_frequency) * 2 != head_dim:
        raise ValueError(f"mrope_section {sections} does not cover half the head dim ({head_dim // 2})")
    return torch.tensor(per_frequency * 2, dtype=torch.long, device=device)


def _cumulative(lengths: list[int], device: torch.device) -> torch.Tensor:
    out = [0]
    for n in lengths:
        out.append(out[-1] + n)
    return torch.tensor(out, dtype=torch.int32).to(device, non_blocking=True)


def _prefix_attention(q, k, v, query_lens: list[int], context_lens: list[int], scale: float) -> torch.Tensor:
    """Per sequence: its new queries attend to its whole context, causally (the queries are the context's tail)."""
    outs = []
    qs = qk = 0
    group = q.shape[1] // k.shape[1]
    for nq, nk in zip(query_lens, context_lens, strict=True):
        qi = q[qs : qs + nq].transpose(0, 1).unsqueeze(0)
        ki = k[qk : qk + nk].transpose(0, 1).repeat_interleave(group, dim=0).unsqueeze(0)
        vi = v[qk : qk + nk].transpose(0, 1).repeat_interleave(group, dim=0).unsqueeze(0)
        offset = nk - nq
        allowed = (torch.arange(nk, device=q.device).unsqueeze(0)
                   <= torch.arange(nq, device=q.device).unsqueeze(1) + offset)
        out = F.scaled_dot_product_attention(qi, ki.to(qi.dtype), vi.to(qi.dtype), attn_mask=allowed, scale=scale)
        outs.append(out[0].transpose(0, 1))
        qs += nq
        qk += nk
    return torch.cat(outs, dim=0)


def _flash_prefill_kernel(device: torch.device) -> Any:
    """PyTorch's varlen flash-attention forward for packed queries over longer packed contexts, if it agrees
    with the SDPA reference on this machine (bottom-right causal alignment, GQA), else None."""
    op = getattr(torch.ops.aten, "_flash_attention_forward", None)
    if op is None:
        return None

    def kernel(q, k, v, cu_q, cu_k, max_q, max_k, scale):
        dtype = q.dtype if q.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
        out = op(q.to(dtype), k.to(dtype).contiguous(), v.to(dtype).contiguous(), cu_q, cu_k, max_q, max_k,
                 0.0, True, False, scale=scale)[0]
        return out.to(q.dtype)

    try:
        gen = torch.Generator(device=device).manual_seed(0)
        heads, kv_heads, dim = 8, 2, 64
        query_lens, context_lens = [5, 1, 40], [12, 30, 40]
        q = torch.randn(sum(query_lens), heads, dim, device=device, dtype=torch.bfloat16, generator=gen)
        k = torch.randn(sum(context_lens), kv_heads, dim, device=device, dtype=torch.bfloat16, generator=gen)
        v = torch.randn_like(k)
        ref = _prefix_attention(q.float(), k.float(), v.float(), query_lens, context_lens, dim**-0.5)
        got = kernel(q, k, v, _cumulative(query_lens, device), _cumulative(context_lens, device), 40, 40, dim**-0.5)
        err = float((got.float() - ref).norm() / ref.norm())
        if err < 2e-2:
            return kernel
        log.info("flash prefill kernel disagrees with the reference (rel. error %.2e); using SDPA per sequence", err)
    except Exception as exc:  # any API or kernel mismatch: the SDPA path is always correct
        log.info("flash prefill kernel unavailable (%r); using SDPA per sequence", exc)
    return None
