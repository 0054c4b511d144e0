"""One test per row of docs/verl.md's version table: what a verl user of that version changes, and nothing more."""

from __future__ import annotations

from pathlib import Path


from agentgym.config import load_config
from agentgym.rows.check import Registered, check_rows
from agentgym.episode.session import Session, SessionConfig
from agentgym.models import tiny_tokenizer
from agentgym.rollout.agent_loop import AgentLoop
from agentgym.rollout.build import agent_loop_config
from agentgym.rollout.scripted_engine import ScriptedEngine
from agentgym.tools.base_tool import BaseTool
from agentgym.tools.registry import build_tools, load_tool_specs
from agentgym.tools.sandbox_fusion.tool import VerlSandboxFusionTool
from agentgym.tools.schemas import ToolResponse

from .verl_layout import ANSWER_TOOL_YAML, install_ported, scripted_student, tool_call, verl_rows

DOC = Path(__file__).resolve().parents[2] / "docs" / "verl.md"
CALL = tool_call("calc_gsm8k_reward", {"answer": "{answer}"})
LIFETIME = "actor_rollout_ref.rollout.multi_turn.tool_instance_lifetime"


def test_every_version_row_names_a_test_that_exists():
    table = DOC.read_text().split("## Version by version", 1)[1].split("## Checking rows", 1)[0]
    named = {line.split("test_verl_versions.py::")[1].split("`")[0] for line in table.splitlines() if "::" in line}
    assert named and all(name in globals() for name in named), named


async def rewards_under(cfg, tmp_path, monkeypatch):
    install_ported(tmp_path, monkeypatch)
    (tmp_path / "tools.yaml").write_text(ANSWER_TOOL_YAML)
    tools = build_tools(load_tool_specs(tmp_path / "tools.yaml"))
    tokenizer = tiny_tokenizer()
    loop = AgentLoop(ScriptedEngine(tokenizer, scripted_student([CALL, CALL, "#### {answer}"])), tokenizer, tools, {},
                     agent_loop_config(cfg))
    [traj] = await loop.run_batch(verl_rows()[:1])
    assert not traj.failed, traj.error
    return traj.tool_rewards, traj.final_score


async def test_verl_0_4_sglang_rollout(tmp_path, monkeypatch):
    """No key to set: one instance per episode, scored by calc_reward, kwargs spread into create."""
    cfg = load_config(None, [])
    assert cfg.actor_rollout_ref.rollout.multi_turn.tool_instance_lifetime == "trajectory"
    assert await rewards_under(cfg, tmp_path, monkeypatch) == ([0.0, -0.05], 1.0)


class NestedKwargsTool(BaseTool):
    """A ToolAgentLoop-era tool that reads its row kwargs only from `create_kwargs=`."""

    def __init__(self, config, tool_schema):
        super().__init__(config, tool_schema)
        self.seen = []

    async def create(self, instance_id=None, **kwargs):
        self.seen.append(kwargs["create_kwargs"]["ground_truth"])
        return instance_id, ToolResponse()


async def test_verl_tool_agent_loop(tmp_path, monkeypatch):
    """0.5-0.6 ToolAgentLoop: `tool_instance_lifetime=call`; create gets the kwargs nested too."""
    cfg = load_config(None, [f"{LIFETIME}=call"])
    assert agent_loop_config(cfg).session.tool_instance_lifetime == "call"
    assert await rewards_under(cfg, tmp_path, monkeypatch) == ([0.0, 0.0], 0.0)
    [spec] = [s for s in load_tool_specs(tmp_path / "tools.yaml") if s.name == "calc_gsm8k_reward"]
    tool = NestedKwargsTool({}, spec.tool_schema)
    row = verl_rows()[0]
    async with Session({"calc_gsm8k_reward": tool}, extra_info=row["extra_info"],
                       config=SessionConfig(tool_instance_lifetime="call")) as session:
        [result] = await session.run_calls([type("C", (), {"name": "calc_gsm8k_reward", "arguments": {"answer": "1"}})()])
    assert result.error is None and tool.seen == [row["reward_model"]["ground_truth"]]


async def test_verl_0_7_january_2026(tmp_path, monkeypatch):
    """ToolAgentLoop only: `call` lifetime; verl's SandboxFusionTool path shows verl's text; rows made for the agent
    loop (with `agent_name`) pass the data check."""
    cfg = load_config(None, [f"{LIFETIME}=call"])
    assert await rewards_under(cfg, tmp_path, monkeypatch) == ([0.0, 0.0], 0.0)
    assert VerlSandboxFusionTool({"sandbox_fusion_url": "http://127.0.0.1:1"}).settings.output_format == "verl"
    rows = [{**row, "agent_name": "tool_agent"} for row in verl_rows()]
    assert check_rows(rows, Registered.of(["calc_gsm8k_reward"], [])) == []


def test_verl_august_2026_rows_with_tool_selection_pass_the_data_check():
    """verl's August 2026 API: `extra_info.tool_selection` in rows (and `@function_tool`, tested in
    tests/tools/test_function_tool.py)."""
    row = verl_rows()[0]
    row["extra_info"]["tool_selection"] = ["calc_gsm8k_reward"]
    assert check_rows([row], Registered.of(["calc_gsm8k_reward", "search"], [])) == []
    from agentgym import function_tool  # noqa: F401
