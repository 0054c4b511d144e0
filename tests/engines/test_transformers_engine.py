import asyncio
import threading

import pytest
import torch
from transformers import AutoModelForCausalLM

from agentgym.rollout.engines import (
    Engine,
    EngineError,
    GenerateOutput,
    SamplingParams,
    DynamicCacheEngine,
    DynamicCacheEngineConfig,
)
from agentgym.rollout.engines.weights import read_weights

GREEDY = SamplingParams(max_new_tokens=24, temperature=0.0)


def reference_logprobs(model, prompt, output, temperature):
    """log_softmax(logits / T) of each output token from one full forward pass over prompt + output."""
    ids = torch.tensor([prompt + output])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1].float()
    scaled = logits / (temperature if temperature > 0 else 1.0)
    return torch.log_softmax(scaled, -1).gather(1, torch.tensor(output).unsqueeze(1)).squeeze(1)


async def test_engine_satisfies_protocol(engine):
    assert isinstance(engine, Engine)
    assert await engine.health()
    assert engine.eos_token_ids >= {engine.model.config.eos_token_id}


async def test_batched_greedy_equals_unbatched(engine, chat_prompts):
    prompts = chat_prompts + [p + p[-3:] for p in chat_prompts]  # six prompts of different lengths
    alone = [await engine.generate(p, GREEDY) for p in prompts]
    assert engine.stats.max_decode_batch == 1
    together = await asyncio.gather(*(engine.generate(p, GREEDY) for p in prompts))
    assert engine.stats.max_prefill_batch == len(prompts)
    assert engine.stats.max_decode_batch == len(prompts)
    for a, b in zip(alone, together):
        assert a.token_ids == b.token_ids
        assert a.finish_reason == b.finish_reason
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4)
    assert len({tuple(o.token_ids) for o in alone}) > 1, "different prompts should give different continuations"


@pytest.mark.parametrize(
    "sampling",
    [
        SamplingParams(max_new_tokens=20, temperature=0.0),
        SamplingParams(max_new_tokens=20, temperature=0.7, top_k=50, seed=3),
        SamplingParams(max_new_tokens=20, temperature=1.3, top_p=0.9, seed=4),
    ],
)
async def test_logprobs_equal_reference_forward_pass(engine, chat_prompts, sampling):
    outs = await asyncio.gather(*(engine.generate(p, sampling) for p in chat_prompts))
    for prompt, out in zip(chat_prompts, outs):
        ref = reference_logprobs(engine.model, prompt, out.token_ids, sampling.temperature)
        assert torch.allclose(torch.tensor(out.logprobs), ref, atol=1e-4), (out.logprobs, ref.tolist())


async def test_seeded_sampling_is_reproducible_whatever_the_batch(engine, chat_prompts):
    sampled = SamplingParams(max_new_tokens=30, temperature=1.0, seed=11)
    alone = await engine.generate(chat_prompts[1], sampled)
    noise = [SamplingParams(max_new_tokens=n, temperature=0.9, top_p=0.8) for n in (5, 17, 40)]
    together = await asyncio.gather(
        engine.generate(chat_prompts[1], sampled), *(engine.generate(chat_prompts[0], s) for s in noise)
    )
    assert together[0].token_ids == alone.token_ids
    assert together[0].logprobs == pytest.approx(alone.logprobs, abs=1e-4)  # batch shape changes float rounding
    other_seed = await engine.generate(chat_prompts[1], SamplingParams(max_new_tokens=30, temperature=1.0, seed=12))
    assert other_seed.token_ids != alone.token_ids


async def test_requests_join_a_running_batch(engine, chat_prompts):
    expected = await engine.generate(chat_prompts[2], SamplingParams(max_new_tokens=10, temperature=0.0))
    long_task = asyncio.create_task(engine.generate(chat_prompts[0], SamplingParams(max_new_tokens=200, temperature=0)))
    while engine.stats.decode_steps < 5:
        await asyncio.sleep(0.001)
    late = await engine.generate(chat_prompts[2], SamplingParams(max_new_tokens=10, temperature=0.0))
    assert not long_task.done(), "the late request must finish while the long one is still decoding"
    assert engine.stats.decode_batch_sizes[2] >= 9, "the late request decoded in the same batch as the long one"
    assert late.token_ids == expected.token_ids
    assert len((await long_task).token_ids) == 200


async def test_batch_size_is_capped(tiny_model_dir, chat_prompts):
    config = DynamicCacheEngineConfig(max_batch_size=4)
    async with DynamicCacheEngine(tiny_model_dir, config) as eng:
        outs = await asyncio.gather(*(eng.generate(chat_prompts[i % 3], GREEDY) for i in range(10)))
        assert eng.stats.max_decode_batch == 4 and eng.stats.max_prefill_batch == 4
        assert eng.stats.requests_finished == 10
        assert all(len(o.token_ids) == GREEDY.max_new_tokens for o in outs)


async def test_stop_tokens_end_generation_and_are_included(engine, chat_prompts):
    ref = await engine.generate(chat_prompts[1], GREEDY)
    k = next(i for i in range(2, len(ref.token_ids)) if ref.token_ids[i] not in ref.token_ids[:i])
    stop_id = ref.token_ids[k]
    out = await engine.generate(chat_prompts[1], SamplingParams(max_new_tokens=24, temperature=0, stop_token_ids=[stop_id]))
    assert out.finish_reason == "stop"
    assert out.token_ids == ref.token_ids[: k + 1]
    assert out.logprobs == pytest.approx(ref.logprobs[: k + 1], abs=1e-5)

    short = await engine.generate(chat_prompts[1], SamplingParams(max_new_tokens=3, temperature=0))
    assert short.finish_reason == "length" and short.token_ids == ref.token_ids[:3]
    one = await engine.generate(chat_prompts[1], SamplingParams(max_new_tokens=1, temperature=0))
    assert one.token_ids == ref.token_ids[:1] and one.finish_reason == "length"


async def test_eos_of_the_model_stops_generation(tiny_model_dir, chat_prompts):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    eos = model.config.eos_token_id
    with torch.no_grad():  # make <|im_end|> the most likely token after any input
        model.lm_head.weight[eos] = model.lm_head.weight[eos] * 0 + model.model.norm.weight * 50
    async with DynamicCacheEngine.from_model(model, eos_token_ids=[eos]) as eng:
        out = await eng.generate(chat_prompts[0], SamplingParams(max_new_tokens=50, temperature=0))
    assert out.token_ids[-1] == eos and out.finish_reason == "stop"
    assert eos not in out.token_ids[:-1]


async def test_generation_stops_at_the_context_limit(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.config.max_position_embeddings = 40
    async with DynamicCacheEngine.from_model(model, eos_token_ids=[]) as eng:
        out = await eng.generate(list(range(3, 33)), SamplingParams(max_new_tokens=100, temperature=0))
        assert out.finish_reason == "length" and len(out.token_ids) == 10
        with pytest.raises(ValueError, match="does not fit the engine's context of 40"):
            await eng.generate(list(range(3, 43)), GREEDY)


async def test_update_weights_from_path_and_state_dict(engine, other_tiny_model_dir, tiny_model_dir, chat_prompts):
    before = await engine.generate(chat_prompts[1], GREEDY)
    async with DynamicCacheEngine(other_tiny_model_dir) as other:
        expected_after = await other.generate(chat_prompts[1], GREEDY)
    assert expected_after.token_ids != before.token_ids

    await engine.update_weights(path=str(other_tiny_model_dir))
    assert engine.stats.weight_version == 1
    assert (await engine.generate(chat_prompts[1], GREEDY)).token_ids == expected_after.token_ids

    await engine.update_weights(read_weights(tiny_model_dir))
    assert engine.stats.weight_version == 2
    assert (await engine.generate(chat_prompts[1], GREEDY)).token_ids == before.token_ids


async def test_update_weights_rejects_bad_state_dicts_without_changing_anything(engine, chat_prompts):
    before = await engine.generate(chat_prompts[0], GREEDY)
    good = {"model.norm.weight": torch.zeros(engine.model.config.hidden_size)}
    with pytest.raises(ValueError, match="not in the model"):
        await engine.update_weights({**good, "module.model.norm.weight": torch.zeros(3)})
    with pytest.raises(ValueError, match="shape mismatch"):
        await engine.update_weights({"model.norm.weight": torch.zeros(7)})
    with pytest.raises(ValueError, match="exactly one"):
        await engine.update_weights()
    assert await engine.generate(chat_prompts[0], GREEDY) == before
    assert engine.stats.weight_version == 0


async def test_update_waits_for_running_requests(engine, other_tiny_model_dir, chat_prompts):
    long = SamplingParams(max_new_tokens=120, temperature=0)
    expected_old = await engine.generate(chat_prompts[0], long)
    steps_before = engine.stats.decode_steps
    running = asyncio.create_task(engine.generate(chat_prompts[0], long))
    while engine.stats.decode_steps == steps_before:
        await asyncio.sleep(0.001)
    assert not running.done()
    await engine.update_weights(path=str(other_tiny_model_dir))
    assert running.done(), "the update must wait until the running request finished"
    assert (await running).token_ids == expected_old.token_ids, "a running request uses one weight version"


async def test_model_runs_off_the_event_loop_thread(engine, chat_prompts):
    threads = set()
    handle = engine.model.register_forward_pre_hook(lambda *_: threads.add(threading.get_ident()))
    try:
        await engine.generate(chat_prompts[0], SamplingParams(max_new_tokens=4, temperature=0))
    finally:
        handle.remove()
    assert threads and threading.get_ident() not in threads


async def test_cancelled_request_leaves_and_others_finish(engine, chat_prompts):
    victim = asyncio.create_task(engine.generate(chat_prompts[0], SamplingParams(max_new_tokens=500, temperature=0)))
    other = asyncio.create_task(engine.generate(chat_prompts[1], SamplingParams(max_new_tokens=60, temperature=0)))
    while engine.stats.decode_steps < 3:
        await asyncio.sleep(0.001)
    victim.cancel()
    out = await other
    assert len(out.token_ids) == 60
    with pytest.raises(asyncio.CancelledError):
        await victim
    assert engine.stats.max_decode_batch == 2
    assert engine.stats.tokens_generated < 500, "the cancelled request must stop decoding"


async def test_close_aborts_requests_in_flight(tiny_model_dir, chat_prompts):
    eng = DynamicCacheEngine(tiny_model_dir)
    await eng.start()
    task = asyncio.create_task(eng.generate(chat_prompts[0], SamplingParams(max_new_tokens=5000, temperature=0)))
    while eng.stats.decode_steps < 3:
        await asyncio.sleep(0.001)
    await eng.close()
    out = await task
    assert isinstance(out, GenerateOutput) and out.finish_reason == "abort"
    assert 3 <= len(out.token_ids) < 5000 and len(out.logprobs) == len(out.token_ids)
    assert not await eng.health()
    with pytest.raises(EngineError, match="not started"):
        await eng.generate(chat_prompts[0], GREEDY)


async def test_a_failing_forward_fails_its_requests_but_not_the_engine(engine, chat_prompts):
    def explode(*_):
        raise RuntimeError("boom")

    handle = engine.model.register_forward_pre_hook(explode)
    try:
        with pytest.raises(EngineError, match="boom"):
            await engine.generate(chat_prompts[0], GREEDY)
    finally:
        handle.remove()
    assert (await engine.generate(chat_prompts[0], GREEDY)).finish_reason == "length"
    assert await engine.health()


async def test_invalid_requests_are_rejected(engine):
    with pytest.raises(ValueError, match="empty"):
        await engine.generate([], GREEDY)
    with pytest.raises(ValueError, match="must lie in"):
        await engine.generate([1, 10**6], GREEDY)
    with pytest.raises(ValueError, match="max_new_tokens"):
        SamplingParams(max_new_tokens=0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0.0)
