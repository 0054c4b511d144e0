"""Sandbox-side events of each code call in the trajectory: server, queue wait, run and CPU time, exit status and
kill reason from the sandbox's own answer; the viewer shows them on the tool turn, the step metrics sum them."""

from __future__ import annotations

import json

from agentgym.episode.episode import EpisodeLimits
from agentgym.models import tiny_tokenizer
from agentgym.report.viewer import render_html
from agentgym.rollout.agent_loop import AgentLoop, AgentLoopConfig
from agentgym.rollout.scripted_engine import ScriptedEngine
from agentgym.tools.sandbox_fusion import SandboxFusionTool
from agentgym.trainer.rollout_data import tool_call_metrics

PROGRAMS = ["print(6 * 7)", "while True: pass", "x = bytearray(400 * 1024 * 1024)", "import sys; sys.exit(3)"]


async def test_each_tool_turn_carries_the_sandboxs_account_and_the_step_sums_it(sandbox):
    tool = SandboxFusionTool({"sandbox_fusion_url": [sandbox.url], "enable_global_rate_limit": False,
                              "default_timeout": 1, "memory_limit_mb": 64}, None)
    turns: dict[str, int] = {}

    def script(_: str, session_id: str | None) -> str:
        n = turns.get(session_id, 0)
        turns[session_id] = n + 1
        if n == len(PROGRAMS):
            return "done"
        return "<tool_call>" + json.dumps({"name": "code_interpreter", "arguments": {"code": PROGRAMS[n]}}) + "</tool_call>"

    tokenizer = tiny_tokenizer()
    config = AgentLoopConfig(limits=EpisodeLimits(max_assistant_turns=8), max_response_tokens=10**5)
    loop = AgentLoop(ScriptedEngine(tokenizer, script), tokenizer, {"code_interpreter": tool}, None, config)
    [traj] = await loop.run_batch([{"prompt": [{"role": "user", "content": "go"}]}])

    calls = traj.tool_metrics
    assert [m["outcome"] for m in calls] == ["success", "timeout", "memory_limit", "runtime_error"]
    assert [m["kill_reason"] for m in calls] == [None, "timeout", "memory", None]
    assert [m["return_code"] for m in calls][0::3] == [0, 3]
    assert all(m["server"] == sandbox.url + "/run_code" and m["queue_wait_s"] >= 0 for m in calls)
    assert calls[1]["execution_time_s"] >= 1 and calls[1]["cpu_time_s"] > 0  # stopped after its second, having run

    step = tool_call_metrics([traj, traj])
    assert step["tools/calls"] == 8 and step["tools/killed/timeout"] == 2 and step["tools/killed/memory"] == 2
    assert step["tools/servers"] == 1 and step["tools/infra_failures"] == 0
    assert step["tools/run_s/max"] >= 1 and 0 < step["tools/cpu_s/mean"] <= step["tools/cpu_s/max"]

    page = render_html([("rollout.jsonl", [traj])])
    host = sandbox.url.split("://")[1]
    facts = [chunk.split("</span>")[0] for chunk in page.split('<span class="facts">')[1:]]
    assert len(facts) == 4
    assert facts[0].startswith(f"server {host} · queued ") and "exit 0" in facts[0] and "success" in facts[0]
    assert "killed: timeout" in facts[1] and "killed: memory" in facts[2] and "exit 3" in facts[3]
