"""Decode attention straight over the paged cache: one Triton program per (sequence, KV head).

Why a kernel of our own: with torch ops alone, decode attention first gathers every sequence's blocks into a
dense tensor; on an H200 at 256 sequences that gather was 52 % of a Qwen2.5-0.5B decode step (the profile is
in benchmarks/RESULTS.md), and torch 2.11 exposes no paged flash kernel (its varlen flash call takes no block
table). This kernel reads each block where it lies, with an online softmax (fp32 statistics), and handles
grouped-query attention by computing all query heads of a KV head together. Triton ships with CUDA builds of
torch; elsewhere `paged_decode_attention` is None and the runner uses the gather path.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU builds of torch come without Triton
    triton = None

paged_decode_attention = None

if triton is not None:

    @triton.jit
    def _paged_decode_kernel(q_ptr, k_ptr, v_ptr, table_ptr, lens_ptr, out_ptr, scale,
                             table_stride, cache_head_stride, group: tl.constexpr, heads: tl.constexpr,
                             head_dim: tl.constexpr, block_size: tl.constexpr, group_pad: tl.constexpr,
                             tile: tl.constexpr):
        row = tl.program_id(0)
        kv_head = tl.program_id(1)
        length = tl.load(lens_ptr + row)
        g = tl.arange(0, group_pad)
        d = tl.arange(0, head_dim)
        heads_here = kv_head * group + g
        q_mask = g < group
        q = tl.load(q_ptr + row * heads * head_dim + heads_here[:, None] * head_dim + d[None, :],
                    mask=q_mask[:, None], other=0.0)
        m = tl.full([group_pad], float("-inf"), tl.float32)
        denom = tl.zeros([group_pad], tl.float32)
        acc = tl.zeros([group_pad, head_dim], tl.float32)
        k_base = k_ptr + kv_head * cache_head_stride
        v_base = v_ptr + kv_head * cache_head_stride
        for start in range(0, length, tile):
            t = start + tl.arange(0, tile)
            valid = t < length
            block = tl.load(table_ptr + row * table_stride + t // block_size, mask=valid, other=0)
            slot = block * block_size + t % block_size
            k = tl.load(k_base + slot[:, None] * head_dim + d[None, :], mask=valid[:, None], other=0.0)
            v = tl.load(v_base + slot[:, None] * head_dim + d[None, :], mask=valid[:, None], other=0.0)
            s = tl.dot(q, tl.trans(k)).to(tl.float32) * scale
            s = tl.where(valid[None, :], s, float("-inf"))
            m_new = tl.maximum(m, tl.max(s, axis=1))
            alpha = tl.exp(m - m_new)
            p = tl.exp(s - m_new[:, None])
            denom = denom * alpha + tl.sum(p, axis=1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v).to(tl.float32)
            m = m_new
        out = acc / denom[:, None]
        tl.store(out_ptr + row * heads * head_dim + heads_here[:, None] * head_dim + d[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=q_mask[:, None])

    def paged_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, tables: torch.Tensor,
                               lens: torch.Tensor, scale: float, block_size: int) -> torch.Tensor:
        """q [B, heads, dim]; k/v cache [kv_heads, slots, dim]; tables [B, >= blocks] (row stride may exceed the
        width); lens [B] context lengths including the new token. Returns [B, heads, dim]."""
        rows, heads, dim = q.shape
        kv_heads = k_cache.shape[0]
        group = heads // kv_heads
        out = torch.empty_like(q)
        _paged_decode_kernel[(rows, kv_heads)](
            q, k_cache, v_cache, tables, lens, out, scale, tables.stride(0), k_cache.stride(0),
            group=group, heads=heads, head_dim=dim, block_size=block_size,
            group_pad=max(16, triton.next_power_of_2(group)), tile=64,
        )
        return out
