"""The memory hand-over of a colocated engine: `release_memory_occupation` frees the KV cache (and on CUDA the
decode graphs), generation is refused until `resume_memory_occupation`, and afterwards generation is exactly as
before (same greedy tokens and logprobs), also across a weight update made while released (the colocated step's
order: release, update, sync, resume)."""

import asyncio

import pytest

from agentgym.rollout.engines import DynamicCacheEngine, DynamicCacheEngineConfig, EngineError, SamplingParams
from agentgym.rollout.engines.paged import PagedEngine, PagedEngineConfig
from agentgym.rollout.engines.weights import read_weights

GREEDY = SamplingParams(max_new_tokens=16, temperature=0.0)


async def _generate(engine, prompts):
    outs = await asyncio.gather(*(engine.generate(p, GREEDY) for p in prompts))
    return [(o.token_ids, o.logprobs) for o in outs]


async def test_paged_engine_releases_its_cache_and_generates_the_same_after_resume(tiny_model_dir, chat_prompts):
    cfg = PagedEngineConfig(device="cpu", dtype="float32", block_size=4, max_batch_size=4, max_model_len=128,
                            num_blocks=200, intra_op_threads=1)
    async with PagedEngine(tiny_model_dir, cfg) as engine:
        before = await _generate(engine, chat_prompts)
        first_prefill = engine.stats.prefilled_tokens
        runner = engine._runner
        cached = engine._scheduler.pool.cached_blocks
        assert runner.cache_resident and cached > 0
        await engine.release_memory_occupation()
        assert engine.released and not runner.cache_resident and runner.kv.numel() == 0
        assert engine._scheduler.pool.cached_blocks == 0, "the prefix cache forgets blocks whose contents are gone"
        with pytest.raises(EngineError, match="released.*resume_memory_occupation"):
            await engine.generate(chat_prompts[0], GREEDY)
        await engine.update_weights(read_weights(str(tiny_model_dir)))  # allowed while released; stays released
        assert engine.released
        with pytest.raises(EngineError, match="released"):
            await engine.generate(chat_prompts[0], GREEDY)
        await engine.resume_memory_occupation()
        assert not engine.released and runner.cache_resident
        assert tuple(runner.kv.shape) == runner._kv_shape
        prefilled = engine.stats.prefilled_tokens
        after = await _generate(engine, chat_prompts)
        assert engine.stats.prefilled_tokens - prefilled == first_prefill, "from an empty cache, as the first time"
        assert after == before
        assert engine.stats.kv_releases == 1
        await engine.resume_memory_occupation()  # nothing released: a no-op
        assert (await _generate(engine, chat_prompts[:1]))[0][0] == before[0][0]


async def test_dynamic_engine_refuses_while_released_and_resumes(tiny_model_dir, chat_prompts):
    async with DynamicCacheEngine(tiny_model_dir, DynamicCacheEngineConfig(max_batch_size=4)) as engine:
        before = await _generate(engine, chat_prompts)
        await engine.release_memory_occupation()
        await engine.release_memory_occupation()  # twice is once
        with pytest.raises(EngineError, match="released"):
            await engine.generate(chat_prompts[0], GREEDY)
        await engine.resume_memory_occupation()
        assert await _generate(engine, chat_prompts) == before


async def test_release_waits_for_running_sequences_and_holds_queued_ones(tiny_model_dir, chat_prompts):
    """A sequence already running finishes before the cache goes; one only queued waits for the resume."""
    cfg = PagedEngineConfig(device="cpu", dtype="float32", block_size=4, max_batch_size=4, max_model_len=128,
                            num_blocks=200, intra_op_threads=1)
    async with PagedEngine(tiny_model_dir, cfg) as engine:
        running = asyncio.create_task(engine.generate(chat_prompts[0], GREEDY))
        while not engine._scheduler.running:
            await asyncio.sleep(0.001)
        release = asyncio.create_task(engine.release_memory_occupation())
        await asyncio.sleep(0)
        queued = asyncio.create_task(engine.generate(chat_prompts[1], GREEDY))  # before the release completes
        await release
        out = await asyncio.wait_for(running, 60)  # finished before the cache went away, not aborted
        assert out.finish_reason in ("stop", "length") and out.token_ids
        await asyncio.sleep(0.05)
        assert not queued.done()
        await engine.resume_memory_occupation()
        assert (await asyncio.wait_for(queued, 60)).token_ids
