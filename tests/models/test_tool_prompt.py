"""Tools for a model whose chat template has none (SmolLM2's ChatML template): the hermes tool prompt is rendered
into the system turn, calls and results in the hermes layout, and trajectories stay token-exact."""

from __future__ import annotations

import json
import re

import pytest

from agentgym.interactions.registry import load_interactions
from agentgym.models import chat_text, tiny_tokenizer
from agentgym.models.chat import chat_delta_ids, chat_ids, template_renders_tools
from agentgym.rollout.agent_loop import AgentLoop, AgentLoopConfig
from agentgym.rollout.scripted_engine import ScriptedEngine
from agentgym.tools.registry import build_tools, load_tool_specs
from agentgym_envs.arithmetic import INTERACTION_CONFIG, TOOL_CONFIG
from agentgym_envs.arithmetic.data import ArithmeticTaskConfig, make_rows

# SmolLM2-135M-Instruct's chat template, as its tokenizer ships it: role and content only, no tools.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def smol_tokenizer():
    """A copy of the tiny tokenizer (same ChatML special tokens) carrying SmolLM2's template."""
    import copy

    tok = copy.deepcopy(tiny_tokenizer())
    tok.chat_template = SMOLLM2_TEMPLATE
    return tok


TOOLS = [{"type": "function", "function": {
    "name": "calculator", "description": "Evaluate an arithmetic expression.",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}}]


def test_templates_with_and_without_tool_support_are_told_apart(smol_tokenizer):
    assert template_renders_tools(tiny_tokenizer())
    assert not template_renders_tools(smol_tokenizer)


def test_tool_schemas_calls_and_results_are_rendered_in_the_hermes_layout(smol_tokenizer):
    messages = [
        {"role": "system", "content": "Be exact."},
        {"role": "user", "content": "What is 6 * 7?"},
        {"role": "assistant", "content": "",
         "tool_calls": [{"type": "function", "function": {"name": "calculator", "arguments": '{"expression": "6*7"}'}}]},
        {"role": "tool", "content": "42"},
        {"role": "tool", "content": "again 42"},
        {"role": "assistant", "content": "\\boxed{42}"},
    ]
    text = chat_text(smol_tokenizer, messages, TOOLS)
    system, rest = text.split("<|im_end|>\n", 1)
    assert system.startswith("<|im_start|>system\nBe exact.\n\n# Tools\n")
    assert "<tools>\n" + json.dumps(TOOLS[0]) + "\n</tools>" in system
    assert '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>' in system
    assert rest == (
        "<|im_start|>user\nWhat is 6 * 7?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "6*7"}}\n'
        "</tool_call><|im_end|>\n"
        "<|im_start|>user\n<tool_response>\n42\n</tool_response>\n<tool_response>\nagain 42\n</tool_response>"
        "<|im_end|>\n<|im_start|>assistant\n\\boxed{42}<|im_end|>\n")
    # Without a system turn the tool prompt becomes one (the template's default identity line gives way).
    alone = chat_text(smol_tokenizer, messages[1:2], TOOLS, add_generation_prompt=True)
    assert alone.startswith("<|im_start|>system\n# Tools\n") and "SmolLM" not in alone
    # No tools: the template's own rendering, untouched.
    assert chat_text(smol_tokenizer, messages[1:2]).startswith("<|im_start|>system\nYou are a helpful AI assistant")
    # The ids are the text's.
    assert smol_tokenizer.decode(chat_ids(smol_tokenizer, messages, TOOLS)) == text


def test_a_template_with_tool_support_is_used_as_it_is():
    tok = tiny_tokenizer()
    text = chat_text(tok, [{"role": "user", "content": "hi"}], TOOLS)
    assert "You can call the functions below" in text and "You may call one or more functions" not in text


def test_delta_after_a_tool_call_continues_the_full_rendering(smol_tokenizer):
    prev = [{"role": "user", "content": "What is 6 * 7?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "6*7"}}}]}]
    new = [{"role": "tool", "content": "42"}]
    full = chat_ids(smol_tokenizer, prev + new, TOOLS, add_generation_prompt=True)
    delta = chat_delta_ids(smol_tokenizer, prev, new, TOOLS)
    prev_ids = chat_ids(smol_tokenizer, prev, TOOLS)
    end = smol_tokenizer.convert_tokens_to_ids("<|im_end|>")
    cut = len(prev_ids) - prev_ids[::-1].index(end)
    assert prev_ids[:cut] + delta == full


def solver(conversation: str, session_id: str) -> str:
    results = re.findall(r"<tool_response>\s*(.*?)\s*</tool_response>", conversation, re.S)
    if results:
        return f"The result is \\boxed{{{results[-1]}}}."
    a, b, c = re.findall(r"\d+", conversation.split("<|im_start|>user")[-1])[:3]
    return f'<tool_call>\n{json.dumps({"name": "calculator", "arguments": {"expression": f"{a}*{b}-{c}"}})}\n</tool_call>'


class Recorder(ScriptedEngine):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.returned: dict[str, list[list[int]]] = {}

    async def generate(self, prompt_ids, sampling, *, session_id=None):
        out = await super().generate(prompt_ids, sampling, session_id=session_id)
        self.returned.setdefault(session_id, []).append(list(out.token_ids))
        return out


async def test_agent_loop_is_token_exact_with_a_template_without_tools(smol_tokenizer):
    rows = make_rows(ArithmeticTaskConfig(num_rows=3, seed=5))
    for i, row in enumerate(rows):
        a, b, c = 101 + i, 23, 7
        row["prompt"][1]["content"] = f"Compute {a} times {b} minus {c}."
        row["extra_info"]["interaction_kwargs"]["ground_truth"] = str(a * b - c)
    engine = Recorder(smol_tokenizer, solver)
    loop = AgentLoop(engine, smol_tokenizer, build_tools(load_tool_specs(TOOL_CONFIG)),
                     load_interactions(INTERACTION_CONFIG), AgentLoopConfig())
    trajs = await loop.run_batch(rows)
    for traj in trajs:
        assert traj.error is None, traj.error
        assert traj.final_score == 1.0 and traj.num_tool_calls == 1
        prompt = smol_tokenizer.decode(traj.prompt_ids)
        assert "<tools>" in prompt and '"name": "calculator"' in prompt, "the schema reaches the model"
        trained = [t for t, m in zip(traj.response_ids, traj.loss_mask) if m == 1]
        assert trained == [t for out in engine.returned[traj.uid] for t in out], "trained tokens are the engine's"
        assert [s.role for s in traj.turns] == ["assistant", "tool", "assistant"]
        for span in traj.turns:
            assert set(traj.loss_mask[span.start:span.end]) == {1 if span.role == "assistant" else 0}
        rendered = chat_text(smol_tokenizer, traj.messages[:-1], loop.tool_dicts)
        decoded = smol_tokenizer.decode(traj.prompt_ids + traj.response_ids, skip_special_tokens=False)
        assert rendered == decoded + "\n", "the ids are the template's rendering of the recorded conversation"
        assert "<tool_response>\n" in decoded and "<|im_start|>tool" not in decoded
