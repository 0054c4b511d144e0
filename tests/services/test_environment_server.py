"""The environment server and RemoteSession: same episodes as in-process, validation and timeouts on the server,
bounded concurrency with a fast 503, and nothing leaked when a client dies mid-episode."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import httpx
import pytest

from agentgym.episode.environment import LocalEnvironment
from agentgym.episode.remote import EnvironmentServerError, RemoteEnvironment
from agentgym.episode.session import SessionConfig
from agentgym.interactions.registry import load_interactions
from agentgym.models import tiny_tokenizer
from agentgym.parsers import ParsedToolCall
from agentgym.rollout.agent_loop import AgentLoop, AgentLoopConfig
from agentgym.rollout.scripted_engine import ScriptedEngine
from agentgym.tools.registry import build_tools, load_tool_specs
from agentgym_envs.arithmetic import INTERACTION_CONFIG, TOOL_CONFIG
from tests.services.conftest import HERE, ROOT, child_env, marker_tools_yaml, start_environment_server, stop

pytestmark = pytest.mark.timeout(180)


def call(name: str, arguments, call_id: str = "c1") -> ParsedToolCall:
    return ParsedToolCall(name=name, arguments=arguments, id=call_id, raw="", index=1)


@pytest.fixture(scope="module")
def arithmetic_server():
    served = start_environment_server("--tools", str(TOOL_CONFIG), "--interactions", str(INTERACTION_CONFIG))
    yield served
    stop(served)


def arithmetic_rows():
    from tests.rollout.test_agent_loop import rows

    return rows(3)


def solver_script(conversation: str, session_id: str) -> str:
    from tests.rollout.test_agent_loop import solver

    return solver(conversation, session_id)


def comparable(traj) -> dict:
    data = traj.to_dict()
    for key in ("extra_info", "tool_metrics"):
        data.pop(key)
    for message in data["messages"]:  # call ids are random per parse
        message.pop("tool_call_id", None)
        for c in message.get("tool_calls") or []:
            c.pop("id")
    return data


async def test_agent_loop_runs_the_same_episodes_against_the_server(arithmetic_server):
    tokenizer = tiny_tokenizer()
    tools = build_tools(load_tool_specs(TOOL_CONFIG))
    local = AgentLoop(ScriptedEngine(tokenizer, solver_script), tokenizer, tools, load_interactions(INTERACTION_CONFIG),
                      AgentLoopConfig())
    env = RemoteEnvironment.connect(arithmetic_server.url)
    remote = AgentLoop(ScriptedEngine(tokenizer, solver_script), tokenizer, {}, environment=env, config=AgentLoopConfig())
    assert remote.tool_dicts == local.tool_dicts, "the prompt shows the server's tools as the local loop would"
    rows = arithmetic_rows()
    here = await local.run_batch(rows, group_prefix="g")
    there = await remote.run_batch(rows, group_prefix="g")
    await env.aclose()
    assert all(t.error is None for t in there), [t.error for t in there]
    assert [comparable(t) for t in there] == [comparable(t) for t in here]
    assert {t.final_score for t in there} == {1.0} and all(t.num_tool_calls == 1 for t in there)
    stats = httpx.get(f"{arithmetic_server.url}/v1/stats").json()
    assert stats["open_sessions"] == 0 and stats["closed"] == stats["opened"] >= 3


async def test_calls_are_validated_and_bounded_on_the_server(marker_server, tmp_path):
    served, markers = marker_server
    env = RemoteEnvironment.connect(served.url)
    async with env.session(extra_info={}, session_id="s1", config=SessionConfig(max_parallel_calls=4)) as session:
        results = await session.run_calls([
            call("marker", {"text": "a"}, "c1"),
            call("nope", {}, "c2"),
            call("marker", {"txt": "a"}, "c3"),
            call("marker", {"text": "slow", "sleep_s": 5}, "c4"),
        ])
        assert [r.error_kind for r in results] == [None, "unknown_tool", "invalid_arguments", "timeout"]
        assert results[0].text == "echo a" and results[0].reward == 0.5
        assert results[0].metrics["raw"] == {"base64": "AAE="}, "bytes in metrics cross the wire readable"
        assert "`text`" in results[2].text and "within 1 s" in results[3].text
        assert [r.call_id for r in results] == ["c1", "c2", "c3", "c4"]
        assert list(markers.iterdir()), "the instance is live while the session is"
        scores = await session.scores()
        assert scores.tool_rewards == {"marker": 1.0}
        assert await session.user_turn([{"role": "user", "content": "x"}]) is None
    assert not list(markers.iterdir()), "closing released the instance"
    await env.aclose()


async def test_a_bad_row_is_a_clear_error(marker_server):
    served, _ = marker_server
    env = RemoteEnvironment.connect(served.url)
    session = env.session(extra_info={"tools_kwargs": {"calculator": {}}}, session_id="bad", config=SessionConfig())
    with pytest.raises(EnvironmentServerError, match=r"calculator.*not registered"):
        await session.start()
    await env.aclose()


async def test_overload_is_answered_at_once_and_clearly(marker_server):
    served, _ = marker_server
    env = RemoteEnvironment.connect(served.url, open_retry_s=0.0)
    sessions = [env.session(extra_info={}, session_id=f"s{i}", config=SessionConfig()) for i in range(4)]
    for session in sessions[:3]:
        await session.start()
    with pytest.raises(EnvironmentServerError, match=r"3 open sessions, its limit \(--max-sessions\)"):
        await sessions[3].start()
    response = httpx.post(f"{served.url}/v1/sessions", json={"session_id": "raw"})
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    await sessions[0].close()
    await sessions[3].start()  # room again
    patient = RemoteEnvironment.connect(served.url, open_retry_s=30.0)
    waiting = asyncio.ensure_future(patient.session(extra_info={}, session_id="s5", config=SessionConfig()).start())
    await asyncio.sleep(0.3)
    assert not waiting.done(), "a patient client retries while the server is full"
    await sessions[1].close()
    await asyncio.wait_for(waiting, 10)
    stats = httpx.get(f"{served.url}/v1/stats").json()
    assert stats["refused"] >= 3 and stats["open_sessions"] == 3
    for session in sessions:
        await session.close()
    await env.aclose()
    await patient.aclose()


async def test_heartbeat_keeps_a_quiet_session_and_silence_releases_it(marker_server):
    served, markers = marker_server
    env = RemoteEnvironment.connect(served.url)
    async with env.session(extra_info={}, session_id="quiet", config=SessionConfig()) as session:
        await session.run_calls([call("marker", {"text": "a"})])
        await asyncio.sleep(2.5)  # longer than the 1 s idle timeout: only the heartbeat keeps it
        [again] = await session.run_calls([call("marker", {"text": "b"})])
        assert again.error is None and again.text == "echo b"
    silent = env.session(extra_info={}, session_id="silent", config=SessionConfig())
    await silent.start()
    silent._heartbeat.cancel()  # a client that stops talking without closing
    await silent.run_calls([call("marker", {"text": "a"})])
    await asyncio.sleep(2.5)
    with pytest.raises(EnvironmentServerError, match="no longer has session silent"):
        await silent.run_calls([call("marker", {"text": "b"})])
    assert not list(markers.iterdir())
    await silent.close()
    await env.aclose()


def test_a_client_killed_mid_episode_leaks_nothing(marker_server):
    served, markers = marker_server
    client = subprocess.Popen([sys.executable, str(HERE / "client_that_dies.py"), served.url], stdout=subprocess.PIPE,
                              text=True, env=child_env(), cwd=ROOT)
    assert client.stdout is not None
    assert client.stdout.readline().startswith("created echo hi")
    time.sleep(0.3)  # the slow call is running on the server
    assert [p.name for p in markers.iterdir()] == ["doomed-marker"]
    client.send_signal(signal.SIGKILL)
    client.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        stats = httpx.get(f"{served.url}/v1/stats").json()
        if stats["open_sessions"] == 0:
            break
        time.sleep(0.2)
    assert stats["open_sessions"] == 0 and stats["reaped"] == 1, stats
    assert not list(markers.iterdir()), "the killed client's instance was released"


def test_the_command_needs_something_to_serve():
    result = subprocess.run([sys.executable, "-m", "agentgym.services.environment"], capture_output=True, text=True,
                            env=child_env(), cwd=ROOT)
    assert result.returncode == 2 and "--tools" in result.stderr


def test_local_environment_is_the_in_process_session(tmp_path):
    tools = build_tools(load_tool_specs(marker_tools_yaml(tmp_path)))
    env = LocalEnvironment(tools)
    assert [s.function.name for s in env.tool_schemas()] == ["marker"]


def test_environment_url_puts_the_default_rollouts_sessions_on_the_server(arithmetic_server, tiny_model_dir):
    from agentgym.config import load_config
    from agentgym.rollout.build import make_rollout

    cfg = load_config(None, [f"actor_rollout_ref.model.path={tiny_model_dir}", "trainer.device=cpu",
                             f"actor_rollout_ref.rollout.multi_turn.environment_url={arithmetic_server.url}"])
    rollout = make_rollout(cfg)
    assert isinstance(rollout.loop.environment, RemoteEnvironment)
    assert [d["function"]["name"] for d in rollout.loop.tool_dicts] == ["calculator"]


def test_the_data_check_knows_the_servers_tools_and_interactions(arithmetic_server):
    from agentgym.config import load_config
    from agentgym.rollout.build import check_dataset, registered_names

    cfg = load_config(None, [f"actor_rollout_ref.rollout.multi_turn.environment_url={arithmetic_server.url}"])
    names = registered_names(cfg)
    assert names.tools == {"calculator"} and names.interactions == {"math_feedback"}
    check_dataset(cfg, arithmetic_rows())  # rows naming the server's interaction pass
