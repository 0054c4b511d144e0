"""The vLLM engine against servers speaking vLLM's OpenAI-compatible API (tests/engines/vllm_test_server.py) on
loopback, each backed by the tiny model; with AGENTGYM_VLLM_URL set, the multi-turn test runs against that real
vLLM server instead (benchmarks/gpu/vllm_engine_check.sh)."""

import asyncio
import os

import pytest
import torch
from transformers import AutoModelForCausalLM

from agentgym.config import load_config
from agentgym.errors import ConfigError
from agentgym.rollout.engines.registry import make_engine
from agentgym.rollout.engines import Engine, EngineError, GenerateOutput, SamplingParams, DynamicCacheEngine
from agentgym.rollout.engines.servers.vllm_engine import VLLMEngine, VLLMEngineConfig
from agentgym.rollout.engines.servers.vllm_protocol import parse_completion_response
from agentgym.rollout.engines.weights import read_weights

from .forward import forward_logprobs
from .vllm_test_server import start_servers

GREEDY = SamplingParams(max_new_tokens=12, temperature=0.0)
REAL_URL = os.environ.get("AGENTGYM_VLLM_URL")
# A real server runs on a GPU in its own precision; the protocol servers run the model as the test does.
TOLERANCE = float(os.environ.get("AGENTGYM_REAL_SERVER_ATOL", "2e-2")) if REAL_URL else 1e-4


def fast_config(urls, **kw) -> VLLMEngineConfig:
    defaults = dict(health_interval_s=0.05, start_timeout_s=5.0, retry_max_wait_s=0.05, request_timeout_s=60.0)
    return VLLMEngineConfig(urls=list(urls), **{**defaults, **kw})


@pytest.fixture
async def servers(tiny_model_dir):
    started = await start_servers(tiny_model_dir, 2)
    yield started
    await asyncio.gather(*(s.close() for s in started))


# ---- wire format -------------------------------------------------------------------------------------------------


async def test_requests_carry_vllm_fields_and_every_sampling_setting(servers):
    async with VLLMEngine(fast_config([servers[0].url])) as engine:
        sampling = SamplingParams(max_new_tokens=5, temperature=0.7, top_p=0.9, top_k=20, stop_token_ids=[7], seed=3)
        await engine.generate([1, 2, 3], sampling, session_id="a")
        assert engine.served_model == str(servers[0].model_path)
    body = servers[0].calls("/v1/completions")[0]
    assert body == {
        "model": servers[0].name, "prompt": [1, 2, 3], "max_tokens": 5, "temperature": 0.7, "top_p": 0.9,
        "top_k": 20, "min_p": 0.0, "repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
        "logprobs": 0, "return_tokens_as_token_ids": True, "return_token_ids": True, "skip_special_tokens": False,
        "spaces_between_special_tokens": False, "include_stop_str_in_output": True, "ignore_eos": False, "n": 1,
        "stream": False, "echo": False, "stop_token_ids": [7], "seed": 3,
    }


def _response(tokens, logprobs, finish="stop", token_ids=None):
    choice = {"index": 0, "text": "", "logprobs": {"tokens": tokens, "token_logprobs": logprobs, "text_offset": [],
                                                   "top_logprobs": []}, "finish_reason": finish, "stop_reason": None}
    if token_ids is not None:
        choice["token_ids"] = token_ids
    return {"choices": [choice], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "prompt_tokens_details": None}}


def test_responses_are_parsed_strictly():
    out, prompt_tokens, cached = parse_completion_response(_response(["token_id:5", "token_id:2"], [-0.5, -1.5], "length"))
    assert out == GenerateOutput([5, 2], [-0.5, -1.5], "length") and (prompt_tokens, cached) == (9, None)
    assert parse_completion_response(_response(["token_id:5"], [-0.1], "abort"))[0].finish_reason == "abort"
    with pytest.raises(EngineError, match="--return-tokens-as-token-ids"):
        parse_completion_response(_response(["Hello"], [-0.5]))
    with pytest.raises(EngineError, match="differ from"):
        parse_completion_response(_response(["token_id:5"], [-0.5], token_ids=[6]))
    with pytest.raises(EngineError, match="expected stop, length or abort"):
        parse_completion_response(_response(["token_id:5"], [-0.5], finish=None))
    with pytest.raises(EngineError, match="logprobs=0"):
        parse_completion_response({"choices": [{"index": 0, "text": "x", "logprobs": None, "finish_reason": "stop"}]})


# ---- generation against vLLM-format servers backed by the tiny model ------------------------------------------------


@pytest.fixture
async def target(tiny_model_dir):
    """Server URLs and the fake servers behind them: two loopback protocol servers, or the real server at AGENTGYM_VLLM_URL."""
    if REAL_URL:
        yield [REAL_URL], []
        return
    fakes = await start_servers(tiny_model_dir, 2)
    yield [s.url for s in fakes], fakes
    await asyncio.gather(*(s.close() for s in fakes))


def served_model(engine) -> torch.nn.Module:
    """The model the (first) server says it serves, loaded here for a direct forward."""
    path = next(iter(engine.server_info.values()))["root"]
    return AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()


async def test_multi_turn_ids_and_logprobs_agree_with_a_direct_forward(target, chat_prompts):
    """Two trajectories of three turns each, sampled at T=0.8: every returned id is scored by the model itself."""
    urls, fakes = target
    temperature = 0.8
    async with VLLMEngine(fast_config(urls, start_timeout_s=60.0)) as engine:
        assert isinstance(engine, Engine)
        model = served_model(engine)
        for session in ("traj-a", "traj-b"):
            prompt = chat_prompts[1] if session == "traj-a" else chat_prompts[2]
            for turn in range(3):
                out = await engine.generate(prompt, SamplingParams(max_new_tokens=8, temperature=temperature, seed=turn),
                                            session_id=session)
                assert 1 <= len(out.token_ids) <= 8 and out.finish_reason in ("stop", "length")
                expected = forward_logprobs(model, prompt, out.token_ids, temperature)
                assert out.logprobs == pytest.approx(expected, abs=TOLERANCE)
                prompt = prompt + out.token_ids + [201, 1]  # a tool turn appended, as the agent loop does
        assert engine.stats.requests == 6
        if fakes:
            assert {engine.router.server_of("traj-a"), engine.router.server_of("traj-b")} == set(urls)
            assert all(len(s.calls("/v1/completions")) == 3 for s in fakes), "each trajectory stays on its server"
        else:
            assert engine.stats.prefix_cache_hit_rate > 0, "later turns hit vLLM's prefix cache"


async def test_weight_update_changes_what_every_server_generates(target, other_tiny_model_dir, chat_prompts):
    urls, _ = target
    other = AutoModelForCausalLM.from_pretrained(other_tiny_model_dir, torch_dtype=torch.float32).eval()
    async with VLLMEngine(fast_config(urls, start_timeout_s=60.0)) as engine:
        await engine.update_weights(path=str(other_tiny_model_dir))
        for i in range(2 * len(urls)):
            out = await engine.generate(chat_prompts[1], SamplingParams(max_new_tokens=6, temperature=0.8),
                                        session_id=f"after-{i}")
            expected = forward_logprobs(other, chat_prompts[1], out.token_ids, 0.8)
            assert out.logprobs == pytest.approx(expected, abs=TOLERANCE)
        assert len(engine.stats.requests_by_server) == len(urls)


async def test_greedy_outputs_equal_the_model_run_directly(servers, tiny_model_dir, chat_prompts):
    async with DynamicCacheEngine(tiny_model_dir) as direct:
        expected = [await direct.generate(p, GREEDY) for p in chat_prompts]
    async with VLLMEngine(fast_config([s.url for s in servers])) as engine:
        got = await asyncio.gather(*(engine.generate(p, GREEDY, session_id=f"s{i}") for i, p in enumerate(chat_prompts)))
        assert await engine.health()
    for e, g in zip(expected, got):
        assert g.token_ids == e.token_ids and g.finish_reason == e.finish_reason
        assert g.logprobs == pytest.approx(e.logprobs, abs=1e-4)


async def test_stop_token_ids_end_the_completion_and_stay_in_it(servers, chat_prompts):
    async with VLLMEngine(fast_config([servers[0].url])) as engine:
        free = await engine.generate(chat_prompts[0], SamplingParams(max_new_tokens=12, temperature=0.0))
        assert len(free.token_ids) >= 4
        stop = free.token_ids[3]
        first = free.token_ids.index(stop)
        out = await engine.generate(chat_prompts[0], SamplingParams(max_new_tokens=12, temperature=0.0, stop_token_ids=[stop]))
    assert out.finish_reason == "stop" and out.token_ids == free.token_ids[: first + 1]
    assert out.logprobs == pytest.approx(free.logprobs[: first + 1], abs=1e-5)


async def test_seeded_sampling_repeats(servers, chat_prompts):
    sampling = SamplingParams(max_new_tokens=10, temperature=1.0, seed=11)
    async with VLLMEngine(fast_config([servers[0].url])) as engine:
        a = await engine.generate(chat_prompts[2], sampling)
        b = await engine.generate(chat_prompts[2], sampling)
    assert a.token_ids == b.token_ids


async def test_sessions_stick_to_one_server_and_spread_over_two(servers, chat_prompts):
    async with VLLMEngine(fast_config([s.url for s in servers])) as engine:

        async def episode(i: int) -> list[list[int]]:
            prompt = chat_prompts[i % 3] + [100 + i]
            prompts = []
            for _ in range(3):
                prompts.append(prompt)
                out = await engine.generate(prompt, SamplingParams(max_new_tokens=6, seed=i), session_id=f"traj-{i}")
                prompt = prompt + out.token_ids + [201, 1]
            return prompts

        episodes = await asyncio.gather(*(episode(i) for i in range(8)))
        hit_rate = engine.stats.prefix_cache_hit_rate
    by_prompt = {tuple(c["prompt"]): s.url for s in servers for c in s.calls("/v1/completions")}
    homes = [{by_prompt[tuple(p)] for p in prompts} for prompts in episodes]
    assert all(len(h) == 1 for h in homes), "every turn of a trajectory must reach the same server"
    assert sorted(sum(1 for h in homes if s.url in h) for s in servers) == [4, 4]
    assert hit_rate > 0.3, "later turns reuse their prefix's cached blocks on the sticky server"


async def test_a_failed_server_hands_its_sessions_over_and_rejoins(servers, chat_prompts):
    a, b = servers
    async with VLLMEngine(fast_config([a.url, b.url])) as engine:
        for i in range(4):
            await engine.generate(chat_prompts[0], GREEDY, session_id=f"t{i}")
        on_a = [f"t{i}" for i in range(4) if engine.router.server_of(f"t{i}") == a.url]
        assert len(on_a) == 2
        await a.stop()
        outs = await asyncio.gather(*(engine.generate(chat_prompts[1], GREEDY, session_id=s) for s in on_a))
        assert all(o.token_ids for o in outs) and engine.stats.retries >= 1
        assert engine.server_health()[a.url] is False
        assert {engine.router.server_of(s) for s in on_a} == {b.url}
        await a.start()
        for _ in range(200):
            if engine.server_health()[a.url]:
                break
            await asyncio.sleep(0.02)
        assert engine.server_health()[a.url], "the health loop brings the server back"
        await b.stop()
        await b.close()
        out = await engine.generate(chat_prompts[2], GREEDY, session_id=on_a[0])
        assert out.token_ids and engine.router.server_of(on_a[0]) == a.url


async def test_all_servers_down_is_an_engine_error(servers, chat_prompts):
    async with VLLMEngine(fast_config([s.url for s in servers], attempts=3)) as engine:
        for s in servers:
            await s.stop()
        with pytest.raises(EngineError) as info:
            await engine.generate(chat_prompts[0], GREEDY, session_id="x")
        assert any(s.url in str(info.value) for s in servers)


# ---- errors --------------------------------------------------------------------------------------------------------


async def test_4xx_answers_are_clear_errors_and_not_retried(servers, chat_prompts):
    async with VLLMEngine(fast_config([servers[0].url])) as engine:
        with pytest.raises(EngineError, match="maximum context length is 512 tokens"):
            await engine.generate(chat_prompts[0], SamplingParams(max_new_tokens=2000))
        assert len(servers[0].calls("/v1/completions")) == 1, "a 400 is the request's fault and must not be retried"
    async with VLLMEngine(fast_config([servers[0].url], model="not-served")) as engine:
        with pytest.raises(EngineError, match="HTTP 404: The model `not-served` does not exist"):
            await engine.generate(chat_prompts[0], GREEDY)
    assert len(servers[0].calls("/v1/completions")) == 2


async def test_raw_logprobs_servers_refuse_temperatures_they_would_misreport(servers, chat_prompts):
    async with VLLMEngine(fast_config([servers[0].url], logprobs_mode="raw_logprobs")) as engine:
        with pytest.raises(EngineError, match="--logprobs-mode processed_logprobs"):
            await engine.generate(chat_prompts[0], SamplingParams(max_new_tokens=4, temperature=0.7))
        assert servers[0].calls("/v1/completions") == []
        assert (await engine.generate(chat_prompts[0], GREEDY)).token_ids
        assert (await engine.generate(chat_prompts[0], SamplingParams(max_new_tokens=4, temperature=1.0))).token_ids
    with pytest.raises(ValueError, match="logprobs_mode"):
        VLLMEngineConfig(urls=["http://x"], logprobs_mode="raw_logits")


async def test_start_fails_clearly_when_no_server_answers():
    with pytest.raises(EngineError, match="no vLLM server became healthy.*vllm serve"):
        await VLLMEngine(fast_config(["http://127.0.0.1:9"], start_timeout_s=0.3)).start()


# ---- weight updates ----------------------------------------------------------------------------------------------


async def test_update_weights_from_a_path_reloads_every_server(servers, other_tiny_model_dir, chat_prompts):
    async with DynamicCacheEngine(other_tiny_model_dir) as direct:
        expected = await direct.generate(chat_prompts[1], GREEDY)
    async with VLLMEngine(fast_config([s.url for s in servers])) as engine:
        before = await engine.generate(chat_prompts[1], GREEDY)
        assert before.token_ids != expected.token_ids
        await engine.update_weights(path=str(other_tiny_model_dir))
        outs = await asyncio.gather(*(engine.generate(chat_prompts[1], GREEDY, session_id=f"w{i}") for i in range(4)))
        assert all(o.token_ids == expected.token_ids for o in outs)
    for s in servers:
        assert s.calls("/collective_rpc")[:2] == [
            {"method": "update_config", "args": [{"model_config": {"model": str(other_tiny_model_dir)}}], "timeout": 1800.0},
            {"method": "reload_weights", "args": [], "timeout": 1800.0},
        ]
        paths = [r.path for r in s.requests if r.path != "/health"]
        update = paths.index("/pause")
        assert paths[update:update + 5] == ["/pause", "/collective_rpc", "/collective_rpc", "/reset_prefix_cache", "/resume"]
        assert s.calls("/pause")[0]["mode"] == "wait"


async def test_update_weights_from_a_state_dict_writes_a_loadable_directory(
    servers, tiny_model_dir, other_tiny_model_dir, chat_prompts, tmp_path
):
    async with DynamicCacheEngine(other_tiny_model_dir) as direct:
        expected = await direct.generate(chat_prompts[0], GREEDY)
    config = fast_config([s.url for s in servers], weight_sync_dir=str(tmp_path), model_path=str(tiny_model_dir))
    async with VLLMEngine(config) as engine:
        await engine.update_weights(read_weights(other_tiny_model_dir))
        assert (await engine.generate(chat_prompts[0], GREEDY)).token_ids == expected.token_ids
    assert (tmp_path / "weights-v000001" / "config.json").exists()
    assert servers[0].calls("/collective_rpc")[0]["args"][0]["model_config"]["model"] == str(tmp_path / "weights-v000001")


async def test_servers_without_dev_mode_cannot_take_weights_and_say_why(tiny_model_dir, other_tiny_model_dir):
    (server,) = await start_servers(tiny_model_dir, 1, dev_mode=False)
    try:
        async with VLLMEngine(fast_config([server.url])) as engine:
            with pytest.raises(EngineError, match="VLLM_SERVER_DEV_MODE=1"):
                await engine.update_weights(path=str(other_tiny_model_dir))
            assert engine.server_health()[server.url] is False, "a server that kept the old weights must not serve"
    finally:
        await server.close()


async def test_failed_reload_takes_the_server_out_until_it_loads(servers, other_tiny_model_dir, chat_prompts):
    a, b = servers
    b.fail_weight_updates = True
    async with VLLMEngine(fast_config([a.url, b.url])) as engine:
        with pytest.raises(EngineError, match=f"failed on 1 server.*{b.url}.*injected failure"):
            await engine.update_weights(path=str(other_tiny_model_dir))
        assert b.calls("/resume"), "a paused server is resumed even when the load fails"
        await asyncio.gather(*(engine.generate(chat_prompts[0], GREEDY, session_id=f"f{i}") for i in range(4)))
        assert b.calls("/v1/completions") == []
        b.fail_weight_updates = False
        for _ in range(200):
            if engine.server_health()[b.url]:
                break
            await asyncio.sleep(0.02)
        assert engine.server_health()[b.url], "the health loop re-sends the latest weights and readmits the server"


# ---- from the run config -------------------------------------------------------------------------------------------


async def test_rollout_name_vllm_builds_the_engine_from_the_config(servers, tiny_model_dir, chat_prompts):
    cfg = load_config(None, [
        "actor_rollout_ref.rollout.name=vllm", f"actor_rollout_ref.model.path={tiny_model_dir}",
        f"+actor_rollout_ref.rollout.engine_kwargs.vllm.urls=[{servers[0].url},{servers[1].url}]",
        "+actor_rollout_ref.rollout.engine_kwargs.vllm.health_interval_s=0.05",
    ])
    engine = make_engine(cfg)
    assert isinstance(engine, VLLMEngine) and engine.config.model_path == str(tiny_model_dir)
    async with engine:
        out = await engine.generate(chat_prompts[0], GREEDY, session_id="cfg")
        assert out.token_ids and engine.served_model == str(tiny_model_dir)


def test_bad_vllm_engine_options_are_config_errors(tiny_model_dir):
    with pytest.raises(ConfigError, match=r"engine_kwargs.vllm.*unknown vllm engine option\(s\) \['url'\]"):
        make_engine(load_config(None, ["actor_rollout_ref.rollout.name=vllm",
                                       "+actor_rollout_ref.rollout.engine_kwargs.vllm.url=http://x"]))
    with pytest.raises(ConfigError, match="logprobs_mode"):
        make_engine(load_config(None, ["actor_rollout_ref.rollout.name=vllm",
                                       "+actor_rollout_ref.rollout.engine_kwargs.vllm.urls=[http://x]",
                                       "+actor_rollout_ref.rollout.engine_kwargs.vllm.logprobs_mode=raw"]))
    with pytest.raises(ConfigError, match="`transformers`, `sglang` or `vllm`"):
        make_engine(load_config(None, ["actor_rollout_ref.rollout.name=tgi"]))
