"""The code tool against a fleet of real sandbox servers: spread by least outstanding requests, a server killed with
SIGKILL in the middle of a rollout and restarted, every trajectory intact, the restarted server back in rotation."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from agentgym.episode.episode import EpisodeLimits
from agentgym.models import tiny_tokenizer
from agentgym.rollout.agent_loop import AgentLoop, AgentLoopConfig
from agentgym.rollout.scripted_engine import ScriptedEngine
from agentgym.tools.sandbox_fusion import SandboxFusionTool
from agentgym.tools.sandbox_fusion.fleet import LimitPressure, SandboxFleet
from agentgym.tools.sandbox_fusion.http import PROCESS_SESSIONS

from .sandbox_process import SandboxProcess

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def three_servers():
    servers = [SandboxProcess().start() for _ in range(3)]
    yield servers
    for server in servers:
        server.stop()


def fleet_tool(urls, **overrides) -> SandboxFusionTool:
    config = {
        "sandbox_fusion_url": list(urls),
        "enable_global_rate_limit": False,
        "default_timeout": 10,
        "retry_initial_backoff": 0.05,
        "retry_max_backoff": 0.5,
        "health_check_interval": 0.2,
        "max_health_check_interval": 1.0,
        **overrides,
    }
    return SandboxFusionTool(config, None)


def test_list_of_urls_sizes_the_defaults():
    tool = fleet_tool(["http://127.0.0.1:1", "http://127.0.0.1:2/run_code", "http://127.0.0.1:3"])
    s = tool.settings
    assert s.server_urls == ("http://127.0.0.1:1/run_code", "http://127.0.0.1:2/run_code", "http://127.0.0.1:3/run_code")
    assert (s.effective_num_workers, s.effective_rate_limit) == (30, 30)
    behind_lb = fleet_tool(["http://lb:8080"], fleet_size=8).settings
    assert (behind_lb.effective_num_workers, behind_lb.effective_rate_limit) == (80, 80)
    explicit = fleet_tool(["http://127.0.0.1:1", "http://127.0.0.1:2"], num_workers=4, rate_limit=2.5).settings
    assert (explicit.effective_num_workers, explicit.effective_rate_limit) == (4, 2.5)
    assert isinstance(tool.fleet, SandboxFleet) and tool.fleet.size == 3


def test_a_server_named_twice_is_an_error_naming_it():
    from agentgym.errors import ConfigError

    with pytest.raises(ConfigError, match="names a server twice"):
        fleet_tool(["http://127.0.0.1:1", "http://127.0.0.1:1/run_code"])


async def test_calls_spread_over_the_servers_by_outstanding_requests(three_servers):
    tool = fleet_tool([s.url for s in three_servers])
    iid, _ = await tool.create()
    results = await asyncio.gather(*(tool.execute(iid, {"code": f"import time; time.sleep(0.3); print({i})"})
                                     for i in range(12)))
    assert [r[0].text for r in results] == [f"Exit code: 0\n--- stdout ---\n{i}" for i in range(12)]
    served = {url: state["requests"] for url, state in tool.fleet.snapshot().items()}
    # 12 calls at once over 3 idle servers: least outstanding gives each exactly 4.
    assert sorted(served.values()) == [4, 4, 4], served
    assert {r[2]["server"] for r in results} == set(served)


async def test_a_dead_server_is_skipped_and_the_call_retried_elsewhere_at_once(three_servers):
    dead = "http://127.0.0.1:1"  # nothing listens on port 1
    tool = fleet_tool([dead, three_servers[0].url], max_retries=1)
    iid, _ = await tool.create()
    # Two at once: least outstanding sends one of them to each server, so one surely meets the dead one.
    outcomes = list(await asyncio.gather(*(tool.execute(iid, {"code": "print(7)"}) for _ in range(2))))
    outcomes += [await tool.execute(iid, {"code": "print(7)"}) for _ in range(3)]
    assert all(r[0].text == "Exit code: 0\n--- stdout ---\n7" for r in outcomes)
    assert all(r[2]["outcome"] == "success" for r in outcomes)
    snap = tool.fleet.snapshot()[dead + "/run_code"]
    assert (snap["in_rotation"], snap["ejections"], snap["requests"], snap["failures"]) == (False, 1, 1, 1)
    # The one call that met the dead server took the live one next, with one retry (max_retries=1 sufficed).
    assert [r[2]["servers_tried"] for r in outcomes].count(2) == 1
    assert all(r[2]["server"] == three_servers[0].url + "/run_code" for r in outcomes)


def _code_for(session: str, turn: int) -> str:
    return f"import time; time.sleep(0.2); print('{session}', {turn})"


async def test_server_killed_mid_rollout_and_restarted_loses_nothing(three_servers):
    victim = three_servers[0]
    tool = fleet_tool([s.url for s in three_servers])
    fleet: SandboxFleet = tool.fleet
    victim_url = victim.url + "/run_code"
    state = {"killed": False, "restarted": False}
    turns: dict[str, int] = {}

    def readmitted_and_serving() -> bool:
        back_at = state.get("requests_at_return")
        return back_at is not None and fleet.snapshot()[victim_url]["requests"] >= back_at + 3

    def script(_: str, session_id: str | None) -> str:
        # Each episode keeps calling code until the restarted server is back in rotation (at most 60 calls), then
        # answers: the rollout spans the kill, the outage and the return.
        n = turns.get(session_id, 0)
        turns[session_id] = n + 1
        if (n >= 6 and readmitted_and_serving()) or n >= 60:
            return "done"
        call = {"name": "code_interpreter", "arguments": {"code": _code_for(session_id, n)}}
        return f"<tool_call>{json.dumps(call)}</tool_call>"

    async def chaos() -> None:
        while fleet.snapshot()[victim_url]["outstanding"] == 0 or sum(turns.values()) < 12:
            await asyncio.sleep(0.02)
        await asyncio.to_thread(victim.kill)  # SIGKILL with requests in flight on it
        state["killed"] = True
        await asyncio.sleep(1.0)
        await asyncio.to_thread(victim.start)  # same port
        state["restarted"] = True
        while not fleet.snapshot()[victim_url]["in_rotation"]:
            await asyncio.sleep(0.02)
        state["requests_at_return"] = fleet.snapshot()[victim_url]["requests"]

    tokenizer = tiny_tokenizer()
    config = AgentLoopConfig(limits=EpisodeLimits(max_assistant_turns=62), max_concurrent_episodes=9,
                             max_response_tokens=10**6)
    loop = AgentLoop(ScriptedEngine(tokenizer, script), tokenizer, {"code_interpreter": tool}, None, config)
    rows = [{"prompt": [{"role": "user", "content": f"task {i}"}]} for i in range(9)]
    chaos_task = asyncio.create_task(chaos())
    trajectories = await loop.run_batch(rows)
    await asyncio.wait_for(chaos_task, 60)

    assert state["killed"] and state["restarted"]
    assert len(trajectories) == 9 and not any(t.failed for t in trajectories)
    assert all(t.finish_reason == "stop" and t.messages[-1]["content"] == "done" for t in trajectories)
    snap = fleet.snapshot()
    assert snap[victim_url]["ejections"] >= 1 and snap[victim_url]["readmissions"] >= 1, snap
    assert all(s["in_rotation"] for s in snap.values()), snap
    # Every tool answer is the program's own output: no call failed, none was lost, none came back twice.
    for traj in trajectories:
        tool_texts = [m["content"] for m in traj.messages if m["role"] == "tool"]
        assert len(tool_texts) == traj.num_tool_calls >= 7
        for turn, text in enumerate(tool_texts):
            match = re.fullmatch(r"Exit code: 0\n--- stdout ---\n(\S+) (\d+)", text)
            assert match is not None and int(match.group(2)) == turn, text
        assert all(m["outcome"] == "success" for m in traj.tool_metrics), [m for m in traj.tool_metrics
                                                                          if m["outcome"] != "success"]
    # The calls in flight on the victim when it died were answered by another server.
    assert any(m["servers_tried"] >= 2 for t in trajectories for m in t.tool_metrics)
    # The restarted server served calls again (the episodes ran until it had served three).
    assert snap[victim_url]["requests"] >= state["requests_at_return"] + 3
    assert max(t.num_tool_calls for t in trajectories) < 60


def test_limit_pressure_warns_when_the_limit_not_the_servers_holds_calls(caplog):
    pressure = LimitPressure(describe=lambda: "raise num_workers", window=20, every_s=3600)
    with caplog.at_level("WARNING"):
        for _ in range(19):
            pressure.record(slot_wait_s=0.0, rate_wait_s=0.5, overloaded=False)
        assert pressure.warnings == 0  # too few calls to judge
        pressure.record(slot_wait_s=0.0, rate_wait_s=0.5, overloaded=False)
        assert pressure.warnings == 1
        pressure.record(slot_wait_s=0.0, rate_wait_s=0.5, overloaded=False)
        assert pressure.warnings == 1  # once per every_s
    assert "0 waited for a worker slot and 20 for a rate token" in caplog.text and "raise num_workers" in caplog.text
    busy = LimitPressure(describe=lambda: "", window=20)
    for i in range(40):
        busy.record(slot_wait_s=1.0, rate_wait_s=0.0, overloaded=i % 10 == 0)
    assert busy.warnings == 0  # the servers said they were busy: the limit is not what bounds the step


async def test_the_tools_own_rate_limit_bounding_calls_is_logged(three_servers, caplog):
    tool = fleet_tool([three_servers[1].url], rate_limit=5, burst=1)
    tool.pressure.window = 20
    iid, _ = await tool.create()
    with caplog.at_level("WARNING", logger="agentgym.tools.sandbox_fusion.fleet"):
        await asyncio.gather(*(tool.execute(iid, {"code": "print(1)"}) for _ in range(24)))
    assert tool.pressure.warnings == 1
    assert "rate_limit=5/s per process for 1 server(s)" in caplog.text


async def test_ping_says_whether_a_server_answers(three_servers):
    fleet = SandboxFleet([three_servers[2].url + "/run_code", "http://127.0.0.1:1/run_code"], PROCESS_SESSIONS)
    assert await fleet.ping(three_servers[2].url + "/run_code") is True
    assert await fleet.ping("http://127.0.0.1:1/run_code") is False
