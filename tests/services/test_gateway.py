"""The gateway: the official openai client drives a tool loop against it; the recorded trajectory is token-exact
and equal to what the in-process agent loop records for the same conversation; re-rendering drift is counted,
the recorded ids win; Anthropic Messages map onto the same trajectory."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from openai import OpenAI

from agentgym.episode.episode import EpisodeLimits
from agentgym.models import tiny_tokenizer
from agentgym.parsers import get_parser
from agentgym.rollout.agent_loop import AgentLoop, AgentLoopConfig
from agentgym.rollout.engines.base import SamplingParams
from agentgym.rollout.scripted_engine import ScriptedEngine
from agentgym.services.gateway.recorder import RecorderConfig, TrajectoryRecorder
from agentgym.services.gateway.server import Gateway, GatewayConfig
from agentgym.services.serving import start_server
from agentgym.tools.registry import build_tools, load_tool_specs
from agentgym_envs.arithmetic import TOOL_CONFIG
from tests.rollout.test_agent_loop import Recorder as RecordingEngine
from tests.rollout.test_agent_loop import solver
from agentgym_envs.arithmetic.openai_agent import CALCULATOR, run_agent

pytestmark = pytest.mark.timeout(180)

PROMPT = [{"role": "system", "content": "Use the calculator for arithmetic. Give the final answer as \\boxed{number}."},
          {"role": "user", "content": "Compute 343 times 85 minus 657."}]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


async def serve(engine, tokenizer, **config):
    recorder = TrajectoryRecorder(engine, tokenizer, get_parser("hermes"), RecorderConfig(**config))
    gateway = Gateway(recorder, GatewayConfig(model_name="tiny"))
    return gateway, await start_server(gateway.app())


def strip_ids(messages):
    out = []
    for m in messages:
        m = {k: v for k, v in m.items() if k != "tool_call_id"}
        if "tool_calls" in m:
            m["tool_calls"] = [{k: v for k, v in c.items() if k != "id"} for c in m["tool_calls"]]
        out.append(m)
    return out


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_client_tool_loop_records_what_the_agent_loop_records(tokenizer, stream):
    engine = RecordingEngine(tokenizer, solver)
    gateway, server = await serve(engine, tokenizer)
    try:
        answer = await asyncio.to_thread(run_agent, f"{server.url}/sessions/s1/v1", PROMPT, stream=stream)
    finally:
        await server.stop()
    assert answer == "The result is \\boxed{28498}."
    traj = gateway.recorder.trajectory("s1")
    trained = [t for t, m in zip(traj.response_ids, traj.loss_mask) if m]
    assert trained == [t for out in engine.returned["s1"] for t in out], "trained ids are the engine's ids"
    summary = gateway.recorder.sessions["s1"].summary()
    assert summary["token_mismatches"] == 0 and summary["branches"] == 1 and summary["requests"] == 2

    loop = AgentLoop(ScriptedEngine(tokenizer, solver), tokenizer, build_tools(load_tool_specs(TOOL_CONFIG)), {},
                     AgentLoopConfig(limits=EpisodeLimits()))
    [reference] = await loop.run_batch([{"prompt": PROMPT}], group_prefix="g")
    assert reference.error is None
    for key in ("prompt_ids", "response_ids", "loss_mask", "rollout_logprobs", "turns", "finish_reason", "num_tool_calls"):
        assert getattr(traj, key) == getattr(reference, key), key
    assert strip_ids(traj.messages) == strip_ids(reference.messages)


async def test_re_rendering_drift_is_counted_and_the_recorded_ids_win(tokenizer):
    # The model writes its call with a space the chat template would not: re-rendering the client's echo gives
    # other ids than the sampled ones.
    def spaced(conversation, session_id):
        if "<tool_response>" in conversation:
            return "Done: \\boxed{4}."
        return '<tool_call>\n{"name": "calculator",   "arguments": {"expression": "2+2"}}\n</tool_call>'

    engine = RecordingEngine(tokenizer, spaced)
    gateway, server = await serve(engine, tokenizer)
    try:
        answer = await asyncio.to_thread(run_agent, f"{server.url}/sessions/drift/v1", PROMPT)
        async with httpx.AsyncClient(base_url=server.url) as client:
            summary = (await client.get("/v1/sessions/drift")).json()
            data = (await client.get("/v1/sessions/drift/trajectory")).json()
    finally:
        await server.stop()
    assert answer == "Done: \\boxed{4}."
    assert summary["token_mismatches"] == 1 and summary["branches"] == 1
    trained = [t for t, m in zip(data["response_ids"], data["loss_mask"]) if m]
    assert trained == [t for out in engine.returned["drift"] for t in out]
    assert data["extra_info"]["gateway"]["token_mismatches"] == 1


async def test_real_tiny_model_sampled_turns_equal_the_agent_loops(tiny_model_dir, tokenizer):
    from agentgym.rollout.engines.dynamic_cache import DynamicCacheEngine, DynamicCacheEngineConfig

    engine = DynamicCacheEngine(str(tiny_model_dir), DynamicCacheEngineConfig(device="cpu", dtype="float32"))
    await engine.start()
    sampling = SamplingParams(max_new_tokens=24, temperature=1.0, seed=7)
    try:
        gateway, server = await serve(engine, tokenizer, sampling=sampling, max_response_tokens=64)
        client = OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
        reply = await asyncio.to_thread(client.chat.completions.create, model="tiny", messages=PROMPT, user="g0-0",
                                        logprobs=True)
        await server.stop()
        loop = AgentLoop(engine, tokenizer, {}, {}, AgentLoopConfig(sampling=sampling, max_response_tokens=64,
                                                                   limits=EpisodeLimits(max_assistant_turns=1)))
        [reference] = await loop.run_batch([{"prompt": PROMPT}], group_prefix="g")
    finally:
        await engine.close()
    traj = gateway.recorder.trajectory("g0-0")
    assert traj.response_ids[: len(reference.response_ids)] == reference.response_ids
    assert traj.rollout_logprobs == pytest.approx(reference.rollout_logprobs, abs=1e-5)
    got = [c.logprob for c in reply.choices[0].logprobs.content]
    assert got == pytest.approx([lp for lp, m in zip(traj.rollout_logprobs, traj.loss_mask) if m], abs=1e-6)
    assert reply.usage.prompt_tokens == len(traj.prompt_ids)


async def test_anthropic_messages_map_onto_the_same_trajectory(tokenizer):
    engine = RecordingEngine(tokenizer, solver)
    gateway, server = await serve(engine, tokenizer)
    tool = {"name": "calculator", "description": CALCULATOR["function"]["description"],
            "input_schema": CALCULATOR["function"]["parameters"]}
    try:
        async with httpx.AsyncClient(base_url=f"{server.url}/sessions/a1") as client:
            history = [{"role": "user", "content": PROMPT[1]["content"]}]
            body = {"model": "tiny", "max_tokens": 256, "system": PROMPT[0]["content"], "tools": [tool]}
            first = (await client.post("/v1/messages", json={**body, "messages": history})).json()
            assert first["stop_reason"] == "tool_use"
            [use] = [b for b in first["content"] if b["type"] == "tool_use"]
            assert use["input"] == {"expression": "343*85-657"}
            history += [{"role": "assistant", "content": first["content"]},
                        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use["id"],
                                                      "content": [{"type": "text", "text": "28498"}]}]}]
            second = (await client.post("/v1/messages", json={**body, "messages": history})).json()
            assert second["stop_reason"] == "end_turn"
            assert second["content"] == [{"type": "text", "text": "The result is \\boxed{28498}."}]
        # the same conversation through the OpenAI shape, in another session
        await asyncio.to_thread(run_agent, f"{server.url}/sessions/o1/v1", PROMPT)
        async with httpx.AsyncClient(base_url=server.url) as client:
            reward = await client.post("/v1/sessions/a1/reward", json={"reward": 0.75})
        assert reward.status_code == 200
    finally:
        await server.stop()
    a, o = gateway.recorder.trajectory("a1"), gateway.recorder.trajectory("o1")
    assert a.response_ids == o.response_ids and a.prompt_ids == o.prompt_ids and a.loss_mask == o.loss_mask
    assert gateway.recorder.sessions["a1"].token_mismatches == 0
    assert a.final_score == 0.75 and o.final_score == 0.0


async def test_a_rewritten_history_starts_a_branch_and_bad_requests_say_why(tokenizer):
    gateway, server = await serve(RecordingEngine(tokenizer, solver), tokenizer)
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            chat = {"model": "tiny", "tools": [CALCULATOR]}
            first = await client.post("/v1/chat/completions", json={**chat, "messages": PROMPT},
                                      headers={"X-Session-Id": "b"})
            assert first.status_code == 200
            other = [PROMPT[0], {"role": "user", "content": "Compute 100 times 20 minus 300."}]
            await client.post("/v1/chat/completions", json={**chat, "messages": other, "user": "b"})
            summary = (await client.get("/v1/sessions/b")).json()
            assert summary["branches"] == 2 and summary["requests"] == 2
            anonymous = await client.post("/v1/chat/completions", json={**chat, "messages": PROMPT})
            assert anonymous.status_code == 400 and "X-Session-Id" in anonymous.json()["error"]["message"]
            n2 = await client.post("/v1/chat/completions", json={**chat, "messages": PROMPT, "n": 2, "user": "c"})
            assert n2.status_code == 400 and "n > 1" in n2.json()["error"]["message"]
            image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
            bad = await client.post("/v1/chat/completions", json={"messages": image, "user": "c"})
            assert bad.status_code == 400 and "image_url" in bad.json()["error"]["message"]
            models = (await client.get("/v1/models")).json()
            assert models["data"][0]["id"] == "tiny"
            assert (await client.post("/v1/sessions/nope/reward", json={"reward": 1})).status_code == 404
    finally:
        await server.stop()
