"""The SGLang engine against servers speaking SGLang's native API (tests/engines/sglang_test_server.py) on loopback,
each backed by the tiny model; with AGENTGYM_SGLANG_URL set, the multi-turn test runs against that real SGLang server
instead (benchmarks/gpu/sglang_engine_check.sh)."""

import asyncio
import json
import os
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from .forward import forward_logprobs
from .sglang_test_server import ReplayServer, start_servers

from agentgym.rollout.engines import Engine, EngineError, GenerateOutput, SamplingParams, DynamicCacheEngine
from agentgym.rollout.engines.servers.sglang_engine import SGLangEngine, SGLangEngineConfig
from agentgym.rollout.engines.servers.sglang_protocol import parse_generate_response
from agentgym.rollout.engines.weights import read_weights

RECORDED = json.loads((Path(__file__).parent / "data" / "sglang_responses.json").read_text())
GREEDY = SamplingParams(max_new_tokens=16, temperature=0.0)
REAL_URL = os.environ.get("AGENTGYM_SGLANG_URL")
# A real server runs on a GPU in its own precision; the protocol servers run the model as the test does.
TOLERANCE = float(os.environ.get("AGENTGYM_REAL_SERVER_ATOL", "2e-2")) if REAL_URL else 1e-4


def fast_config(urls, **kw) -> SGLangEngineConfig:
    defaults = dict(health_interval_s=0.05, start_timeout_s=5.0, retry_max_wait_s=0.05, request_timeout_s=60.0)
    return SGLangEngineConfig(urls=list(urls), **{**defaults, **kw})


@pytest.fixture
async def servers(tiny_model_dir):
    started = await start_servers(tiny_model_dir, 3)
    yield started
    await asyncio.gather(*(s.close() for s in started))


# ---- recorded responses -----------------------------------------------------------------------------------------


def test_recorded_responses_parse():
    stop = parse_generate_response(RECORDED["logprob_stop"])
    assert stop.token_ids == RECORDED["logprob_stop"]["output_ids"] and stop.token_ids[-1] == 128009
    assert stop.finish_reason == "stop" and stop.logprobs[4] == pytest.approx(-0.3321)

    legacy = parse_generate_response(RECORDED["logprob_length_without_output_ids"])
    assert legacy == GenerateOutput([12095, 13, 1084], [-0.8123, -0.1201, -1.4402], "length")
    assert parse_generate_response(RECORDED["logprob_abort"]).finish_reason == "abort"

    with pytest.raises(EngineError, match="differ from"):
        parse_generate_response(RECORDED["logprob_ids_disagree"])
    for name in ("docs_length_no_logprobs", "docs_stop_no_logprobs"):
        with pytest.raises(EngineError, match="return_logprob"):
            parse_generate_response(RECORDED[name])


async def test_replayed_responses_drive_the_engine_and_requests_use_sglang_fields():
    replay = await ReplayServer(
        [
            (200, RECORDED["logprob_stop"]),
            (200, RECORDED["logprob_length_without_output_ids"]),
            (400, RECORDED["error_400"]),
        ]
    ).start()
    try:
        async with SGLangEngine(fast_config([replay.url])) as engine:
            sampling = SamplingParams(max_new_tokens=7, temperature=0.6, top_p=0.9, top_k=20, stop_token_ids=[128009], seed=5)
            out = await engine.generate([1, 2, 3], sampling, session_id="t1")
            assert out.token_ids == RECORDED["logprob_stop"]["output_ids"] and out.finish_reason == "stop"
            assert (await engine.generate([1, 2], GREEDY)).finish_reason == "length"
            with pytest.raises(EngineError, match="longer than the model's context length"):
                await engine.generate([1] * 5, GREEDY)
            assert engine.stats.cached_tokens == 48 and engine.stats.prompt_tokens == 55
    finally:
        await replay.close()
    first = replay.requests[0]
    assert first["input_ids"] == [1, 2, 3] and first["return_logprob"] is True and first["stream"] is False
    assert first["sampling_params"] == {
        "max_new_tokens": 7, "temperature": 0.6, "top_p": 0.9, "top_k": 20, "stop_token_ids": [128009],
        "sampling_seed": 5, "skip_special_tokens": False, "spaces_between_special_tokens": False, "no_stop_trim": True,
    }
    assert len(replay.requests) == 3, "a 400 is the request's fault and must not be retried"


# ---- end to end against SGLang-format servers backed by the tiny model -----------------------------------------------


async def test_outputs_equal_the_model_run_directly(servers, tiny_model_dir, chat_prompts):
    async with DynamicCacheEngine(tiny_model_dir) as direct:
        expected = [await direct.generate(p, GREEDY) for p in chat_prompts]
    async with SGLangEngine(fast_config([s.url for s in servers])) as engine:
        got = await asyncio.gather(*(engine.generate(p, GREEDY, session_id=f"s{i}") for i, p in enumerate(chat_prompts)))
        assert await engine.health() and isinstance(engine, Engine)
        await engine.flush_cache()
        assert engine.server_info[servers[0].url]["model_path"] == str(tiny_model_dir)
    assert all(s.calls("/flush_cache") for s in servers)
    for e, g in zip(expected, got):
        assert g.token_ids == e.token_ids and g.finish_reason == e.finish_reason
        assert g.logprobs == pytest.approx(e.logprobs, abs=1e-4)


@pytest.fixture
async def target(tiny_model_dir):
    """Server URLs and the fake servers behind them: two loopback protocol servers, or the real server at AGENTGYM_SGLANG_URL."""
    if REAL_URL:
        yield [REAL_URL], []
        return
    fakes = await start_servers(tiny_model_dir, 2)
    yield [s.url for s in fakes], fakes
    await asyncio.gather(*(s.close() for s in fakes))


def served_model(engine) -> torch.nn.Module:
    """The model the (first) server says it serves, loaded here for a direct forward."""
    path = next(iter(engine.server_info.values()))["model_path"]
    return AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()


async def test_multi_turn_ids_and_logprobs_agree_with_a_direct_forward(target, chat_prompts):
    """Two trajectories of three turns each, sampled at T=0.8: every returned id is scored by the model itself."""
    urls, fakes = target
    temperature = 0.8
    async with SGLangEngine(fast_config(urls, start_timeout_s=60.0)) as engine:
        assert isinstance(engine, Engine)
        model = served_model(engine)
        for session in ("traj-a", "traj-b"):
            prompt = chat_prompts[1] if session == "traj-a" else chat_prompts[2]
            for turn in range(3):
                out = await engine.generate(prompt, SamplingParams(max_new_tokens=8, temperature=temperature), session_id=session)
                assert 1 <= len(out.token_ids) <= 8 and out.finish_reason in ("stop", "length")
                expected = forward_logprobs(model, prompt, out.token_ids, temperature)
                assert out.logprobs == pytest.approx(expected, abs=TOLERANCE)
                prompt = prompt + out.token_ids + [201, 1]  # a tool turn appended, as the agent loop does
        assert engine.stats.requests == 6
        if fakes:
            assert {engine.router.server_of("traj-a"), engine.router.server_of("traj-b")} == set(urls)
            assert all(len(s.calls("/generate")) == 3 for s in fakes), "each trajectory stays on its server"
        else:
            assert engine.stats.prefix_cache_hit_rate > 0, "later turns hit SGLang's radix cache"


async def test_weight_update_changes_what_every_server_generates(target, other_tiny_model_dir, chat_prompts):
    urls, _ = target
    other = AutoModelForCausalLM.from_pretrained(other_tiny_model_dir, torch_dtype=torch.float32).eval()
    async with SGLangEngine(fast_config(urls, start_timeout_s=60.0)) as engine:
        await engine.update_weights(path=str(other_tiny_model_dir))
        for i in range(2 * len(urls)):
            out = await engine.generate(chat_prompts[1], SamplingParams(max_new_tokens=6, temperature=0.8),
                                        session_id=f"after-{i}")
            expected = forward_logprobs(other, chat_prompts[1], out.token_ids, 0.8)
            assert out.logprobs == pytest.approx(expected, abs=TOLERANCE)
        assert len(engine.stats.requests_by_server) == len(urls)


async def test_sessions_stick_to_one_server_and_spread_over_servers(servers, chat_prompts):
    turns = 3
    async with SGLangEngine(fast_config([s.url for s in servers])) as engine:

        async def episode(i: int) -> list[list[int]]:
            prompt = chat_prompts[i % 3] + [100 + i]  # distinct per session
            prompts = []
            for _ in range(turns):
                prompts.append(prompt)
                out = await engine.generate(prompt, SamplingParams(max_new_tokens=6, temperature=1.0, seed=i),
                                            session_id=f"traj-{i}")
                prompt = prompt + out.token_ids + [201, 1]  # a tool turn appended, as the agent loop does
            return prompts

        episodes = await asyncio.gather(*(episode(i) for i in range(12)))
        hit_rate = engine.stats.prefix_cache_hit_rate
    by_prompt = {tuple(c["input_ids"]): s.url for s in servers for c in s.calls("/generate")}
    homes = [{by_prompt[tuple(p)] for p in prompts} for prompts in episodes]
    assert all(len(h) == 1 for h in homes), "every turn of a trajectory must reach the same server"
    assert sorted(sum(1 for h in homes if s.url in h) for s in servers) == [4, 4, 4]
    # Turns 2 and 3 reuse their whole prefix on the sticky server (simulated radix cache).
    assert hit_rate > 0.5


async def test_a_server_going_down_moves_its_sessions_and_it_rejoins(servers, chat_prompts):
    a, b, c = servers
    await c.stop()  # only a and b at first
    async with SGLangEngine(fast_config([a.url, b.url, c.url])) as engine:
        assert engine.server_health() == {a.url: True, b.url: True, c.url: False}
        for i in range(4):
            await engine.generate(chat_prompts[0], GREEDY, session_id=f"t{i}")
        on_a = [f"t{i}" for i in range(4) if engine.router.server_of(f"t{i}") == a.url]
        assert len(on_a) == 2

        await a.stop()
        outs = await asyncio.gather(*(engine.generate(chat_prompts[1], GREEDY, session_id=s) for s in on_a))
        assert all(o.token_ids for o in outs)
        assert engine.server_health()[a.url] is False and engine.stats.retries >= 1
        assert {engine.router.server_of(s) for s in on_a} == {b.url}

        await a.start()  # same port
        await c.start()
        for _ in range(200):
            if all(engine.server_health().values()):
                break
            await asyncio.sleep(0.02)
        assert all(engine.server_health().values()), "the health loop must bring servers back"
        await engine.generate(chat_prompts[1], GREEDY, session_id=on_a[0])
        assert engine.router.server_of(on_a[0]) == b.url, "a moved session stays where it went"
        fresh = await asyncio.gather(*(engine.generate(chat_prompts[2], GREEDY, session_id=f"new{i}") for i in range(3)))
        assert len(fresh) == 3
        assert {engine.router.server_of(f"new{i}") for i in range(3)} >= {a.url, c.url}


async def test_all_servers_down_is_an_engine_error(servers, chat_prompts):
    async with SGLangEngine(fast_config([s.url for s in servers], attempts=3)) as engine:
        for s in servers:
            await s.stop()
        with pytest.raises(EngineError) as info:
            await engine.generate(chat_prompts[0], GREEDY, session_id="x")
        assert any(s.url in str(info.value) for s in servers)
        assert not await engine.health()


async def test_start_fails_clearly_when_no_server_answers():
    engine = SGLangEngine(fast_config(["http://127.0.0.1:9"], start_timeout_s=0.3))
    with pytest.raises(EngineError, match="no SGLang server became healthy"):
        await engine.start()


async def test_unhealthy_server_is_skipped(servers, chat_prompts):
    servers[0].healthy = False  # answers /health with 503, like SGLang while starting
    async with SGLangEngine(fast_config([s.url for s in servers])) as engine:
        await asyncio.gather(*(engine.generate(chat_prompts[0], GREEDY, session_id=f"u{i}") for i in range(6)))
    assert servers[0].calls("/generate") == []


# ---- weight updates ----------------------------------------------------------------------------------------------


async def test_update_weights_from_disk_reaches_every_server(servers, other_tiny_model_dir, chat_prompts):
    async with DynamicCacheEngine(other_tiny_model_dir) as direct:
        expected = await direct.generate(chat_prompts[1], GREEDY)
    async with SGLangEngine(fast_config([s.url for s in servers])) as engine:
        before = await engine.generate(chat_prompts[1], GREEDY)
        assert before.token_ids != expected.token_ids
        await engine.update_weights(path=str(other_tiny_model_dir))
        for s in servers:
            assert s.calls("/update_weights_from_disk") == [
                {"model_path": str(other_tiny_model_dir), "abort_all_requests": False, "weight_version": "1"}
            ]
        outs = await asyncio.gather(*(engine.generate(chat_prompts[1], GREEDY, session_id=f"w{i}") for i in range(3)))
        assert all(o.token_ids == expected.token_ids for o in outs)


async def test_update_weights_from_state_dict_writes_a_loadable_directory(
    servers, tiny_model_dir, other_tiny_model_dir, chat_prompts, tmp_path
):
    async with DynamicCacheEngine(other_tiny_model_dir) as direct:
        expected = await direct.generate(chat_prompts[0], GREEDY)
    config = fast_config([s.url for s in servers], weight_sync_dir=str(tmp_path), model_path=str(tiny_model_dir))
    async with SGLangEngine(config) as engine:
        await engine.update_weights(read_weights(other_tiny_model_dir))
        await engine.update_weights(read_weights(other_tiny_model_dir))
        await engine.update_weights(read_weights(other_tiny_model_dir))
        assert (await engine.generate(chat_prompts[0], GREEDY)).token_ids == expected.token_ids
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["weights-v000002", "weights-v000003"], "older versions are cleaned up"
    assert (tmp_path / "weights-v000003" / "config.json").exists()
    assert servers[0].calls("/update_weights_from_disk")[-1]["model_path"] == str(tmp_path / "weights-v000003")


async def test_state_dict_update_without_a_sync_dir_explains_the_fix(servers, tiny_model_dir):
    async with SGLangEngine(fast_config([s.url for s in servers])) as engine:
        with pytest.raises(EngineError, match="weight_sync_dir"):
            await engine.update_weights(read_weights(tiny_model_dir))


async def test_failed_update_takes_the_server_out_until_it_loads_the_weights(servers, other_tiny_model_dir, chat_prompts):
    a, b, c = servers
    b.fail_weight_updates = True
    async with SGLangEngine(fast_config([s.url for s in servers])) as engine:
        with pytest.raises(EngineError, match=f"failed on 1 server.*{b.url}.*injected failure"):
            await engine.update_weights(path=str(other_tiny_model_dir))
        assert engine.server_health()[b.url] is False
        await asyncio.gather(*(engine.generate(chat_prompts[0], GREEDY, session_id=f"f{i}") for i in range(6)))
        assert b.calls("/generate") == [], "a server with stale weights must not serve"

        b.fail_weight_updates = False
        for _ in range(200):
            if engine.server_health()[b.url]:
                break
            await asyncio.sleep(0.02)
        assert engine.server_health()[b.url], "the health loop re-sends the latest weights and readmits the server"
        assert b.calls("/update_weights_from_disk")[-1]["model_path"] == str(other_tiny_model_dir)


async def test_server_down_during_update_gets_the_weights_when_it_returns(servers, other_tiny_model_dir, chat_prompts):
    a, b, c = servers
    async with DynamicCacheEngine(other_tiny_model_dir) as direct:
        expected = await direct.generate(chat_prompts[2], GREEDY)
    async with SGLangEngine(fast_config([s.url for s in servers])) as engine:
        await c.stop()
        while engine.server_health()[c.url]:
            await asyncio.sleep(0.02)
        await engine.update_weights(path=str(other_tiny_model_dir))
        assert c.calls("/update_weights_from_disk") == []
        await c.start()
        while not engine.server_health()[c.url]:
            await asyncio.sleep(0.02)
        assert len(c.calls("/update_weights_from_disk")) == 1
        engine.router.mark_down(a.url)
        engine.router.mark_down(b.url)
        assert (await engine.generate(chat_prompts[2], GREEDY)).token_ids == expected.token_ids
        assert c.calls("/generate"), "the request was served by the returning server"
