"""The paged engine's parts on their own: the block pool's prefix cache and the on-device sampler."""

import math

import pytest
import torch

from agentgym.rollout.engines.paged.blocks import NULL_BLOCK, BlockPool, OutOfBlocks, block_keys
from agentgym.rollout.engines.paged.runner import buckets
from agentgym.rollout.engines.paged.sampler import SamplingInputs, sample, uniform_for
from agentgym.rollout.engines.sampling import filter_top_k_top_p


def test_pool_hands_out_every_block_but_scratch_and_refuses_more():
    pool = BlockPool(num_blocks=5, block_size=4)
    got = pool.allocate(4)
    assert NULL_BLOCK not in got and len(set(got)) == 4
    with pytest.raises(OutOfBlocks):
        pool.allocate(1)
    pool.release(got)
    assert pool.available == 4
    with pytest.raises(RuntimeError, match="released more often"):
        pool.release([got[0]])


def test_same_prefix_finds_the_same_blocks_and_different_prefix_does_not():
    pool = BlockPool(num_blocks=10, block_size=2)
    keys = block_keys([1, 2, 3, 4, 5], 2)
    assert len(keys) == 2
    blocks = pool.allocate(3)
    for b, k in zip(blocks, keys):
        pool.register(b, k)
    assert pool.match(block_keys([1, 2, 3, 4, 9, 9], 2)) == blocks[:2]
    assert pool.refs[blocks[0]] == 2
    # Same second block after a different first block: not the same prefix.
    assert pool.match(block_keys([7, 7, 3, 4], 2)) == []


def test_released_blocks_stay_cached_until_memory_is_needed_oldest_first():
    pool = BlockPool(num_blocks=5, block_size=1)
    a = pool.allocate(2)
    for b, k in zip(a, block_keys([1, 2], 1)):
        pool.register(b, k)
    pool.release(a)  # cached, evictable; the tail (token 2) is the older release
    assert pool.cached_blocks == 2 and pool.available == 4
    fresh = pool.allocate(2)  # the free blocks go first
    assert set(fresh).isdisjoint(a)
    assert pool.match(block_keys([1, 2], 1)) == a
    pool.release(a)
    pool.allocate(1)  # evicts the least recently released cached block: token 2's
    assert pool.match(block_keys([1, 2], 1)) == a[:1]


def test_clear_cache_forgets_every_prefix():
    pool = BlockPool(num_blocks=4, block_size=1)
    blocks = pool.allocate(2)
    for b, k in zip(blocks, block_keys([3, 4], 1)):
        pool.register(b, k)
    pool.release(blocks[1:])
    pool.clear_cache()
    assert pool.cached_blocks == 0 and pool.match(block_keys([3], 1)) == []
    assert pool.available == 2  # blocks[0] is still held by its sequence
    pool.release(blocks[:1])
    assert pool.available == 3


def test_buckets_cover_every_size_with_bounded_padding():
    b = buckets(256)
    assert b[0] == 1 and b[-1] == 256
    for n in range(1, 257):
        chosen = next(x for x in b if x >= n)
        assert chosen <= max(2, math.ceil(n * 1.5))


def test_uniform_depends_only_on_seed_and_index():
    draws = [uniform_for(7, i) for i in range(2000)]
    assert draws == [uniform_for(7, i) for i in range(2000)]
    assert all(0.0 <= d < 1.0 for d in draws)
    assert abs(sum(draws) / len(draws) - 0.5) < 0.03
    assert uniform_for(8, 0) != uniform_for(7, 0)


def _inputs(rows, *, temperature=1.0, top_k=None, top_p=1.0, greedy=False, uniform=None):
    return SamplingInputs(
        inv_temperature=torch.full((rows,), 1.0 / temperature),
        greedy=torch.full((rows,), greedy),
        top_k=torch.full((rows,), top_k or 10**6, dtype=torch.int64),
        top_p=torch.full((rows,), top_p),
        uniform=uniform,
    )


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, None, 1.0), (0.6, None, 1.0), (1.0, 3, 1.0), (1.2, None, 0.7)])
def test_sampled_frequencies_match_the_filtered_distribution(temperature, top_k, top_p):
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    rows = 20000
    uniform = torch.tensor([uniform_for(3, i) for i in range(rows)], dtype=torch.float32)
    filtered = top_k is not None or top_p < 1.0
    tokens, logprobs = sample(logits.expand(rows, -1), _inputs(rows, temperature=temperature, top_k=top_k, top_p=top_p,
                                                                uniform=uniform), filtered=filtered)
    probs = torch.softmax(logits / temperature, -1)
    target = filter_top_k_top_p(probs, top_k or -1, top_p)
    target = target / target.sum()
    freq = torch.bincount(tokens, minlength=6).float() / rows
    assert torch.allclose(freq, target, atol=0.015), (freq, target)
    assert torch.allclose(logprobs, torch.log(probs)[tokens], atol=1e-5)  # logprob before filtering


def test_greedy_rows_take_the_argmax_with_the_untempered_logprob():
    logits = torch.tensor([[0.1, 3.0, 0.2], [5.0, 0.0, 0.0]])
    tokens, logprobs = sample(logits, _inputs(2, greedy=True, uniform=torch.tensor([0.99, 0.0])), filtered=False)
    assert tokens.tolist() == [1, 0]
    assert torch.allclose(logprobs, torch.log_softmax(logits, -1)[[0, 1], [1, 0]])
