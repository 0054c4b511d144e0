"""The smaller differences a verl port meets: reward types, rollout_trace_op, interaction names, OmegaConf values."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from agentgym.episode.session import Session, as_reward
from agentgym.errors import ConfigError
from agentgym.interactions.base import BaseInteraction
from agentgym.interactions.registry import default_interaction_name, load_interactions
from agentgym.tools.base_tool import BaseTool
from agentgym.tools.registry import build_tools, load_tool_specs
from agentgym.tools.schemas import OpenAIFunctionToolSchema, ToolResponse
from agentgym.utils.rollout_trace import recording_spans, rollout_trace_op

SCHEMA = OpenAIFunctionToolSchema.model_validate({
    "type": "function",
    "function": {"name": "probe", "description": "d", "parameters": {"type": "object", "properties": {
        "x": {"type": "integer", "description": "x"}}, "required": ["x"]}},
})


@dataclass
class Call:
    name: str
    arguments: dict


@pytest.mark.parametrize(("value", "score", "kept"), [
    (1, 1.0, False), (0.5, 0.5, False), (True, 1.0, False), (None, 0.0, False),
    (np.float32(0.25), 0.25, False), (np.int64(2), 2.0, False), (torch.tensor(0.75), 0.75, False),
    ([], 0.0, True), ("1.0", 0.0, True), ({"score": 1.0}, 0.0, True), (torch.tensor([1.0, 2.0]), 0.0, True),
])
def test_as_reward_scores_numbers_and_keeps_the_rest(value, score, kept):
    got, record = as_reward(value)
    assert got == pytest.approx(score) and (record is not None) == kept
    if kept:
        assert record["type"] == type(value).__name__


class OddRewards(BaseTool):
    """Every reward slot filled with something that is not a number, as verl's SandboxFusionTool does."""

    @rollout_trace_op
    async def execute(self, instance_id, parameters, **kwargs):
        return ToolResponse(text="ok"), "high", None

    async def calc_reward(self, instance_id, **kwargs) -> str:
        return []


class OddInteraction(BaseInteraction):
    async def generate_response(self, instance_id, messages, **kwargs):
        return True, "fine", [1], None

    async def calculate_score(self, instance_id, **kwargs):
        return {"score": 1}


async def test_non_numeric_rewards_never_fail_the_episode():
    extra = {"interaction_kwargs": {"query": "q"}}
    async with Session({"probe": OddRewards({}, SCHEMA)}, extra_info=extra,
                       interactions={"odd": OddInteraction({})}) as session:
        [result] = await session.run_calls([Call("probe", {"x": 3})])
        turn = await session.user_turn([{"role": "assistant", "content": "a"}])
        scores = await session.scores()
    assert result.error is None and result.reward == 0.0
    assert result.metrics["non_numeric_reward"] == {"type": "str", "value": "'high'"}
    assert turn.reward == 0.0 and turn.metrics["non_numeric_reward"]["type"] == "list"
    assert scores.tool_rewards == {"probe": 0.0} and scores.interaction_score == 0.0
    assert set(scores.reward_metrics) == {"probe.calc_reward", "interaction.calculate_score"}


async def test_rollout_trace_op_records_a_span_per_call():
    class Traced(BaseTool):
        @rollout_trace_op
        async def execute(self, instance_id, parameters, **kwargs):
            await asyncio.sleep(0.02)
            if parameters["x"] < 0:
                raise ValueError("negative")
            return ToolResponse(text=str(self.helper(parameters["x"]))), 0.0, {}

        @rollout_trace_op
        def helper(self, x):
            return x * 2

    tool = Traced({}, SCHEMA)
    extra = {"tools_kwargs": {"probe": {"execute_kwargs": {"hint": object()}}}}
    async with Session({"probe": tool}, extra_info=extra) as session:
        ok, bad = await session.run_calls([Call("probe", {"x": 4}), Call("probe", {"x": -1})])
    assert ok.text == "8"
    helper, execute = ok.metrics["trace"]  # in the order they finished
    assert helper["op"].endswith("Traced.helper") and helper["inputs"] == {"x": 4}
    assert execute["op"].endswith("Traced.execute") and execute["duration_s"] >= 0.02 and execute["error"] is None
    assert execute["inputs"]["parameters"] == {"x": 4} and execute["inputs"]["instance_id"].endswith("-probe")
    assert execute["inputs"]["hint"].startswith("<object object"), "arguments stay JSON-ready"
    assert execute["started_at"] <= helper["started_at"]
    assert bad.error.startswith("Error: tool `probe` failed: ValueError: negative")
    [failed] = bad.metrics["trace"]
    assert failed["error"] == "ValueError: negative" and failed["inputs"]["parameters"] == {"x": -1}
    # Outside a session nothing is recorded and the decorated method behaves as before.
    assert tool.helper(3) == 6
    with recording_spans() as spans:
        assert tool.helper(5) == 10
    assert [s["inputs"] for s in spans] == [{"x": 5}]


@pytest.mark.parametrize(("class_name", "name"), [
    ("pkg.mod.MathFeedbackInteraction", "mathfeedback"),
    ("verl.interactions.gsm8k_interaction.Gsm8kInteraction", "gsm8k"),
    ("pkg.Judge", "judge"),
    ("pkg.Interaction", "interaction"),
])
def test_default_interaction_name_follows_verl(class_name, name):
    assert default_interaction_name(class_name) == name


def test_interaction_yaml_without_name_gets_verls_name(tmp_path):
    path = tmp_path / "i.yaml"
    path.write_text("interaction:\n  - class_name: agentgym.interactions.math_feedback.MathFeedbackInteraction\n")
    assert list(load_interactions(path)) == ["mathfeedback"]


CODE_TOOL_YAML = """tools:
  - class_name: verl.tools.sandbox_fusion_tools.SandboxFusionTool
    config:
      sandbox_fusion_url: ${oc.env:AGENTGYM_TEST_SANDBOX_URL,http://localhost:8080/run_code}
      default_timeout: ${oc.env:AGENTGYM_TEST_TIMEOUT,12}
    tool_schema:
      type: function
      function:
        name: code_interpreter
        description: run code
        parameters:
          type: object
          properties:
            code: {type: string, description: the code}
          required: [code]
"""


def test_tool_yaml_values_resolve_like_omegaconf(tmp_path, monkeypatch):
    path = tmp_path / "tools.yaml"
    path.write_text(CODE_TOOL_YAML)
    monkeypatch.delenv("AGENTGYM_TEST_SANDBOX_URL", raising=False)
    monkeypatch.delenv("AGENTGYM_TEST_TIMEOUT", raising=False)
    settings = build_tools(load_tool_specs(path))["code_interpreter"].settings
    assert settings.run_code_url == "http://localhost:8080/run_code" and settings.default_timeout == 12.0
    monkeypatch.setenv("AGENTGYM_TEST_SANDBOX_URL", "http://10.1.2.3:9000")
    monkeypatch.setenv("AGENTGYM_TEST_TIMEOUT", "5")
    settings = build_tools(load_tool_specs(path))["code_interpreter"].settings
    assert settings.run_code_url == "http://10.1.2.3:9000/run_code" and settings.default_timeout == 5.0


def test_unresolvable_interpolation_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.delenv("AGENTGYM_TEST_UNSET", raising=False)
    path = tmp_path / "i.yaml"
    path.write_text("interaction:\n  - name: a\n    class_name: agentgym.interactions.base.BaseInteraction\n"
                    "    config: {model: '${oc.env:AGENTGYM_TEST_UNSET}'}\n")
    with pytest.raises(ConfigError) as info:
        load_interactions(path)
    text = str(info.value)
    assert text.startswith(f"file {path}: cannot resolve the value at `interaction[0].config.model`")
    assert "AGENTGYM_TEST_UNSET" in text and "give the interpolation a default" in text
