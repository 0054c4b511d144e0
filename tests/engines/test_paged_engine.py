"""The paged engine on CPU with a tiny fp32 model: logprobs against a plain forward pass, prefix reuse across
turns and across a group's samples, preemption under a small cache, cancellation, weight updates, bad input."""

import asyncio

import pytest
import torch
from transformers import AutoModelForCausalLM

from agentgym.rollout.engines import Engine, EngineError, SamplingParams, DynamicCacheEngine
from agentgym.rollout.engines.paged import PagedEngine, PagedEngineConfig
from agentgym.rollout.engines.weights import read_weights

GREEDY = SamplingParams(max_new_tokens=24, temperature=0.0)


def config(**overrides) -> PagedEngineConfig:
    base = dict(device="cpu", dtype="float32", block_size=4, max_batch_size=8, max_model_len=256, num_blocks=400,
                intra_op_threads=1)
    return PagedEngineConfig(**{**base, **overrides})


@pytest.fixture
async def paged(tiny_model_dir):
    async with PagedEngine(tiny_model_dir, config()) as eng:
        yield eng


@pytest.fixture(scope="module")
def reference_model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


def reference_logprobs(model, prompt, output, temperature):
    ids = torch.tensor([prompt + output])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1].float()
    scaled = logits / (temperature if temperature > 0 else 1.0)
    return torch.log_softmax(scaled, -1).gather(1, torch.tensor(output).unsqueeze(1)).squeeze(1)


async def test_satisfies_the_engine_protocol(paged):
    assert isinstance(paged, Engine)
    assert await paged.health()


@pytest.mark.parametrize("sampling", [
    SamplingParams(max_new_tokens=20, temperature=0.0),
    SamplingParams(max_new_tokens=20, temperature=1.0, seed=1),
    SamplingParams(max_new_tokens=20, temperature=0.7, top_k=50, seed=3),
    SamplingParams(max_new_tokens=20, temperature=1.3, top_p=0.9, seed=4),
])
async def test_logprobs_agree_with_a_plain_forward_pass(paged, reference_model, chat_prompts, sampling):
    outs = await asyncio.gather(*(paged.generate(p, sampling) for p in chat_prompts))
    for prompt, out in zip(chat_prompts, outs):
        assert len(out.token_ids) == len(out.logprobs) > 0
        ref = reference_logprobs(reference_model, prompt, out.token_ids, sampling.temperature)
        assert torch.allclose(torch.tensor(out.logprobs), ref, atol=1e-4), (out.logprobs[:5], ref[:5])


async def test_the_fused_layer_stack_computes_what_the_modules_do(tiny_model_dir, reference_model, chat_prompts):
    """On CUDA the norms, rope and activation run as compiled kernels with the residual adds moved into the
    norms (`paged/fused.py`); here the same restructured stack runs uncompiled and must give the same logprobs."""
    from agentgym.rollout.engines.paged.fused import FusedOps

    sampling = SamplingParams(max_new_tokens=12, temperature=1.0, seed=5)
    async with PagedEngine(tiny_model_dir, config()) as eng:
        assert eng._runner._fused is None  # CPU: the model's own modules
        plain = await asyncio.gather(*(eng.generate(p, sampling) for p in chat_prompts))
        eng._runner._fused = FusedOps(compiled=False)
        eng._scheduler.pool.clear_cache()
        fused = await asyncio.gather(*(eng.generate(p, sampling) for p in chat_prompts))
    for prompt, a, b in zip(chat_prompts, plain, fused):
        assert a.token_ids == b.token_ids
        ref = reference_logprobs(reference_model, prompt, b.token_ids, 1.0)
        assert torch.allclose(torch.tensor(b.logprobs), ref, atol=1e-4)


async def test_greedy_matches_the_dynamic_engine(paged, tiny_model_dir, chat_prompts):
    async with DynamicCacheEngine(tiny_model_dir) as dynamic:
        expected = [await dynamic.generate(p, GREEDY) for p in chat_prompts]
    together = await asyncio.gather(*(paged.generate(p, GREEDY) for p in chat_prompts))
    assert [o.token_ids for o in together] == [o.token_ids for o in expected]
    assert paged.stats.max_decode_batch == len(chat_prompts)


async def test_seeded_sampling_does_not_depend_on_the_batch(paged, chat_prompts):
    sampling = SamplingParams(max_new_tokens=16, temperature=1.0, seed=11)
    alone = await paged.generate(chat_prompts[1], sampling)
    crowd = await asyncio.gather(*(paged.generate(p, sampling) for p in chat_prompts + chat_prompts))
    assert crowd[1].token_ids == alone.token_ids == crowd[len(chat_prompts) + 1].token_ids
    other = await paged.generate(chat_prompts[1], SamplingParams(max_new_tokens=16, temperature=1.0, seed=12))
    assert other.token_ids != alone.token_ids


async def test_next_turn_prefills_only_its_new_tokens(paged, reference_model, chat_prompts):
    first = await paged.generate(chat_prompts[2], GREEDY)
    tool_turn = [7, 8, 9, 10, 11, 12]
    second_prompt = chat_prompts[2] + first.token_ids + tool_turn
    before = paged.stats.prefilled_tokens
    second = await paged.generate(second_prompt, GREEDY)
    prefilled = paged.stats.prefilled_tokens - before
    assert prefilled <= len(tool_turn) + paged.config.block_size, (prefilled, len(second_prompt))
    ref = reference_logprobs(reference_model, second_prompt, second.token_ids, 0.0)
    assert torch.allclose(torch.tensor(second.logprobs), ref, atol=1e-4)


async def test_a_group_shares_its_prompt_blocks(paged, chat_prompts):
    prompt = chat_prompts[2] * 3
    n = 6
    outs = await asyncio.gather(*(paged.generate(prompt, SamplingParams(max_new_tokens=8, seed=i)) for i in range(n)))
    assert len({tuple(o.token_ids) for o in outs}) > 1
    full_blocks = (len(prompt) - 1) // paged.config.block_size
    stats = paged.stats
    assert stats.context_tokens == n * len(prompt)
    assert stats.cached_tokens >= (n - 1) * full_blocks * paged.config.block_size
    assert stats.prefilled_tokens <= len(prompt) + n * paged.config.block_size


async def test_on_cpu_the_cache_holds_kv_cache_sequences_and_more_requests_still_finish(tiny_model_dir, chat_prompts):
    """Unset num_blocks on CPU: room for kv_cache_sequences sequences of max_model_len (plus the scratch block), not
    max_batch_size of them; a batch larger than that room queues or is preempted and gives the same tokens."""
    prompts = [p + [i] for i, p in enumerate(chat_prompts * 3)]
    sampling = SamplingParams(max_new_tokens=40, temperature=0.0)
    async with PagedEngine(tiny_model_dir, config(num_blocks=400)) as roomy:
        expected = await asyncio.gather(*(roomy.generate(p, sampling) for p in prompts))
    async with PagedEngine(tiny_model_dir, config(num_blocks=None, max_model_len=200, kv_cache_sequences=2)) as small:
        assert small.stats.num_blocks == 2 * (200 // 4) + 1
        got = await asyncio.gather(*(small.generate(p, sampling) for p in prompts))
    async with PagedEngine(tiny_model_dir, config(num_blocks=None, max_model_len=200)) as default:
        assert default.stats.num_blocks == 8 * (200 // 4) + 1  # max_batch_size sequences when the key is unset
    assert [g.token_ids for g in got] == [e.token_ids for e in expected]
    with pytest.raises(ValueError, match="kv_cache_sequences"):
        config(kv_cache_sequences=0)


async def test_a_small_cache_preempts_and_recomputes_without_changing_results(tiny_model_dir, chat_prompts):
    prompts = [p + [i] for i, p in enumerate(chat_prompts * 3)]
    sampling = SamplingParams(max_new_tokens=40, temperature=0.0)
    async with PagedEngine(tiny_model_dir, config(num_blocks=400)) as roomy:
        expected = await asyncio.gather(*(roomy.generate(p, sampling) for p in prompts))
        assert roomy.stats.preemptions == 0
    async with PagedEngine(tiny_model_dir, config(num_blocks=60, max_model_len=200)) as tight:
        got = await asyncio.gather(*(tight.generate(p, sampling) for p in prompts))
        assert tight.stats.preemptions > 0
        assert tight._scheduler.pool.available == 60 - 1  # every block back, only scratch block 0 held
    for e, g in zip(expected, got):
        assert g.token_ids == e.token_ids
        assert g.finish_reason == e.finish_reason
        assert torch.allclose(torch.tensor(g.logprobs), torch.tensor(e.logprobs), atol=1e-4)


async def test_several_tokens_per_decode_call_change_nothing_but_the_call_count(tiny_model_dir):
    """Budgets that end mid-call (max tokens, context limit) and stop tokens sampled mid-call: the tokens after
    them are discarded and never reach the cache's shared blocks, so results equal one token per call."""
    prompts = [[5 + i, 6, 7, 8, 9, 10 + i][: 3 + i % 4] for i in range(6)]
    plain = [SamplingParams(max_new_tokens=n, temperature=1.0, seed=i) for i, n in enumerate((5, 7, 13, 30, 2, 1))]
    plain.append(SamplingParams(max_new_tokens=11, temperature=0.0))
    prompts.append([4, 5, 6])

    async def run(steps: int, samplings) -> tuple[list, PagedEngine]:
        async with PagedEngine(tiny_model_dir, config(decode_steps=steps, max_model_len=24)) as eng:
            eng.eos_token_ids = frozenset()
            outs = await asyncio.gather(*(eng.generate(p, s) for p, s in zip(prompts, samplings)))
            assert eng._scheduler.pool.available == eng.stats.num_blocks - 1  # every block back
        return outs, eng

    one, one_engine = await run(1, plain)
    assert [len(o.token_ids) for o in one] == [5, 7, 13, 24 - 6, 2, 1, 11]  # the 4th stops at the context limit
    stop = one[3].token_ids[5]  # a stop token the 4th request samples mid-call
    stopping = [SamplingParams(**{**vars(s), "stop_token_ids": [stop]}) for s in plain]
    one_stopped, _ = await run(1, stopping)
    assert len(one_stopped[3].token_ids) <= 6 and one_stopped[3].finish_reason == "stop"
    for steps in (3, 4):
        many, engine = await run(steps, plain)
        many_stopped, _ = await run(steps, stopping)
        assert engine.stats.decode_calls < one_engine.stats.decode_calls
        for expected, got in zip(one + one_stopped, many + many_stopped):
            assert got.token_ids == expected.token_ids
            assert got.finish_reason == expected.finish_reason
            assert torch.allclose(torch.tensor(got.logprobs), torch.tensor(expected.logprobs), atol=1e-5)


async def test_a_sequence_longer_than_the_whole_cache_ends_with_length(tiny_model_dir):
    async with PagedEngine(tiny_model_dir, config(num_blocks=9, max_model_len=1000)) as eng:
        eng.eos_token_ids = frozenset()
        out = await eng.generate([5, 6, 7], SamplingParams(max_new_tokens=500, temperature=1.0, seed=0))
    assert out.finish_reason == "length"
    assert len(out.token_ids) == 8 * 4 - 3  # the cache's 8 usable blocks of 4 tokens, minus the prompt


async def test_cancelled_requests_release_their_blocks(paged, chat_prompts):
    pool = paged._scheduler.pool
    idle = pool.available
    long = SamplingParams(max_new_tokens=200, temperature=1.0, seed=0)
    paged.eos_token_ids = frozenset()
    task = asyncio.create_task(paged.generate(chat_prompts[0], long))
    other = asyncio.create_task(paged.generate(chat_prompts[1], SamplingParams(max_new_tokens=5, temperature=0.0)))
    while paged.stats.decode_steps < 3:
        await asyncio.sleep(0.01)
    task.cancel()
    assert len((await other).token_ids) == 5
    await asyncio.sleep(0.05)
    for _ in range(100):
        if pool.available == idle:
            break
        await asyncio.sleep(0.02)
    assert pool.available == idle
    assert not paged._scheduler.running


async def test_weight_update_changes_outputs_and_empties_the_prefix_cache(paged, other_tiny_model_dir, chat_prompts):
    other = AutoModelForCausalLM.from_pretrained(other_tiny_model_dir).eval()
    await paged.generate(chat_prompts[2], GREEDY)
    assert paged._scheduler.pool.cached_blocks > 0
    await paged.update_weights(path=str(other_tiny_model_dir))
    assert paged._scheduler.pool.cached_blocks == 0
    assert paged.stats.weight_version == 1
    out = await paged.generate(chat_prompts[2], GREEDY)
    ref = reference_logprobs(other, chat_prompts[2], out.token_ids, 0.0)
    assert torch.allclose(torch.tensor(out.logprobs), ref, atol=1e-4)
    await paged.update_weights(read_weights(other_tiny_model_dir))
    with pytest.raises(ValueError, match="not in the model"):
        await paged.update_weights({"no.such.weight": torch.zeros(1)})


async def test_bad_requests_are_refused_with_the_reason(paged):
    with pytest.raises(ValueError, match="empty"):
        await paged.generate([], GREEDY)
    with pytest.raises(ValueError, match="does not fit"):
        await paged.generate([1] * 300, GREEDY)
    with pytest.raises(ValueError, match=r"\[0, "):
        await paged.generate([1, 10**7], GREEDY)
    assert await paged.health()


async def test_unsupported_models_are_named(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.config.model_type = "gpt2"
    engine = PagedEngine.from_model(model, eos_token_ids=[0], config=config())
    with pytest.raises(EngineError, match="gpt2.*dynamic"):
        await engine.start()
