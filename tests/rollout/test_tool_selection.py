"""extra_info.tool_selection (verl's per-row tool subset): the prompt shows only the selected tools, a call to
another registered tool gets a tool message saying so, and a selected name that is not registered is an error."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from agentgym import function_tool
from agentgym.episode.session import Session
from agentgym.models import chat_text, tiny_tokenizer
from agentgym.rollout.agent_loop import AgentLoop, AgentLoopConfig
from agentgym.rollout.scripted_engine import ScriptedEngine
from agentgym.tools.function_tool import FunctionTool
from agentgym.tools.registry import build_tools, load_tool_specs
from agentgym_envs.arithmetic import TOOL_CONFIG


@function_tool
def shout(text: str) -> str:
    """Upper-case the text.

    Args:
        text: What to shout.
    """
    return text.upper()


def all_tools() -> dict:
    return {**build_tools(load_tool_specs(TOOL_CONFIG)), "shout": FunctionTool(shout.__agentgym_function_tool__)}


class _Call:
    def __init__(self, name: str, arguments: dict):
        self.name, self.arguments, self.id = name, arguments, None


async def _calls(extra_info: dict, calls: list[_Call]):
    async with Session(all_tools(), extra_info=extra_info) as session:
        return sorted(session.tools), await session.run_calls(calls)


def test_the_session_offers_only_the_selected_tools() -> None:
    offered, (ok, refused, unknown) = asyncio.run(_calls(
        {"tool_selection": ["shout"]}, [_Call("shout", {"text": "hi"}), _Call("calculator", {"expression": "1+1"}),
                                        _Call("nope", {})]))
    assert offered == ["shout"] and ok.response.text == "HI"
    assert (refused.error_kind, refused.error) == (
        "unselected_tool", "Error: tool `calculator` is not available in this task. Available tools: `shout`.")
    assert (unknown.error_kind, unknown.error) == ("unknown_tool", "Error: unknown tool `nope`. Available tools: `shout`.")


@pytest.mark.parametrize("selection", [None, []])
def test_no_selection_or_an_empty_one_offers_every_tool(selection) -> None:
    offered, _ = asyncio.run(_calls({"tool_selection": selection}, []))
    assert offered == ["calculator", "shout"]


def test_a_selected_name_that_is_not_registered_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"tool_selection names tool\(s\) \['shuot'\] that are not registered"):
        asyncio.run(_calls({"tool_selection": ["shuot"]}, []))
    with pytest.raises(ValueError, match="must be a list of tool names"):
        asyncio.run(_calls({"tool_selection": "shout"}, []))


def test_tools_kwargs_may_name_a_registered_tool_the_row_does_not_select() -> None:
    offered, _ = asyncio.run(_calls({"tool_selection": ["shout"], "tools_kwargs": {"calculator": {}}}, []))
    assert offered == ["shout"]


def _script(conversation: str, session_id: str | None) -> str:
    if "<tool_response>" in conversation:
        return "Done: " + re.findall(r"<tool_response>\s*(.*?)\s*</tool_response>", conversation, re.S)[-1]
    calls = [{"name": "calculator", "arguments": {"expression": "6*7"}}, {"name": "shout", "arguments": {"text": "hi"}}]
    return "\n".join(f"<tool_call>\n{json.dumps(c)}\n</tool_call>" for c in calls)


async def test_the_prompt_shows_only_the_rows_tools_and_stays_token_exact() -> None:
    tokenizer = tiny_tokenizer()
    loop = AgentLoop(ScriptedEngine(tokenizer, _script), tokenizer, all_tools(), {}, AgentLoopConfig())
    row = {"prompt": [{"role": "user", "content": "Shout hi."}], "extra_info": {"tool_selection": ["shout"]}}
    everything = {"prompt": row["prompt"], "extra_info": {}}
    selected, full = await loop.run_batch([row, everything])
    assert selected.error is None and full.error is None
    prompt = tokenizer.decode(selected.prompt_ids, skip_special_tokens=False)
    assert '"name": "shout"' in prompt and '"name": "calculator"' not in prompt
    assert '"name": "calculator"' in tokenizer.decode(full.prompt_ids, skip_special_tokens=False)
    tool_texts = [m["content"] for m in selected.messages if m["role"] == "tool"]
    assert tool_texts == ["Error: tool `calculator` is not available in this task. Available tools: `shout`.", "HI"]
    assert [m["content"] for m in full.messages if m["role"] == "tool"] == ["42", "HI"]
    decoded = tokenizer.decode(selected.prompt_ids + selected.response_ids, skip_special_tokens=False)
    rendered = chat_text(tokenizer, selected.messages, loop.row_tool_dicts(row["extra_info"]))
    assert rendered.startswith(decoded) and rendered[len(decoded):] == "\n"
