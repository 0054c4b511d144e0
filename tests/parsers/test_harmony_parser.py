"""gpt-oss's harmony format: calls as messages to functions.NAME, the chain of thought left out, its chat template."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from transformers.utils.chat_template_utils import render_jinja_template

from agentgym.parsers import HarmonyToolCallParser, chat_template, get_parser

from .strategies import compact_names, contents, openai_calls

HINT = HarmonyToolCallParser.call_hint
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather now.",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


@pytest.mark.parametrize("name", ["gpt-oss", "gpt_oss", "harmony"])
def test_names_select_this_format(name: str) -> None:
    assert isinstance(get_parser(name), HarmonyToolCallParser)


@pytest.mark.parametrize(
    "text",
    [
        '<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather '
        '<|constrain|>json<|message|>{"city": "Oslo"}<|call|>',
        '<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant to=functions.get_weather<|channel|>commentary '
        'json<|message|>{"city": "Oslo"}<|call|>',
        '<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>\n{"city": "Oslo"}\n',
    ],
)
def test_a_call_in_either_header_order_without_the_chain_of_thought(text: str) -> None:
    result = get_parser("gpt-oss").parse(text)
    assert result.errors == [] and result.content == ""
    assert [(c.name, c.arguments, c.raw in text) for c in result.calls] == [("get_weather", {"city": "Oslo"}, True)]


def test_final_and_preamble_text_is_the_content() -> None:
    text = ("<|channel|>analysis<|message|>The answer is 41? No, 42.<|end|><|start|>assistant<|channel|>commentary"
            "<|message|>Checking.<|end|><|start|>assistant<|channel|>final<|message|>42<|return|>")
    assert get_parser("gpt-oss").parse(text).content == "Checking.\n42"
    assert get_parser("gpt-oss").parse("no markup at all").content == "no markup at all"


def test_arguments_may_hold_harmony_markup() -> None:
    parser = get_parser("gpt-oss")
    arguments = {"city": "<|call|><|end|><|start|>assistant to=functions.x<|message|>"}
    result = parser.parse(parser.format([{"name": "get_weather", "arguments": arguments}]))
    assert result.errors == [] and [c.arguments for c in result.calls] == [arguments]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": <|call|>',
         "invalid JSON at line 1 column 9 (the JSON ends before the value is complete)"),
        ('<|channel|>commentary to=functions.get_weather json<|message|>{"city": "Oslo"} please<|call|>',
         'unexpected text after the JSON object at line 1 column 18: "please"'),
        ("<|channel|>commentary to=functions.get_weather json<|message|>[1]<|call|>",
         "the arguments must be a JSON object, got an array"),
        ('<|channel|>commentary to=browser.search json<|message|>{"q": "x"}<|call|>',
         'the recipient "browser.search" is not a function; functions are addressed as to=functions.NAME'),
        ("<|channel|>commentary to=functions. json<|message|>{}<|call|>",
         'the recipient "functions." is not a function; functions are addressed as to=functions.NAME'),
    ],
)
def test_broken_calls_become_messages_for_the_model(text: str, problem: str) -> None:
    result = get_parser("gpt-oss").parse(text)
    assert result.calls == []
    assert [(e.index, e.message, e.raw) for e in result.errors] == [(1, f"Tool call 1 could not be parsed: {problem}. {HINT}", text)]


def test_an_empty_body_is_a_call_without_arguments() -> None:
    result = get_parser("gpt-oss").parse("<|channel|>commentary to=functions.now json<|message|><|call|>")
    assert [(c.name, c.arguments) for c in result.calls] == [("now", {})]


def test_format_and_the_chat_template_write_the_same_turn() -> None:
    calls = [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Zürich"}}}]
    before = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "weather?"}]
    template = chat_template("gpt-oss")
    prompt = render_jinja_template([before], tools=TOOLS, chat_template=template, add_generation_prompt=True)[0][0]
    after_call = [*before, {"role": "assistant", "content": "Checking.", "tool_calls": calls}, {"role": "tool", "content": "sunny"}]
    full = render_jinja_template([after_call], tools=TOOLS, chat_template=template)[0][0]
    generated = get_parser("gpt-oss").format(calls, content="Checking.")
    assert full == prompt + generated + "<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>sunny<|end|>"
    result = get_parser("gpt-oss").parse(generated)
    assert result.content == "Checking." and [(c.name, c.arguments) for c in result.calls] == [("get_weather", {"city": "Zürich"})]
    final = render_jinja_template([[*before, {"role": "assistant", "content": "Sunny."}]], tools=TOOLS, chat_template=template)[0][0]
    assert final == prompt + get_parser("gpt-oss").format([], content="Sunny.").replace("<|return|>", "<|end|>")
    assert "type get_weather = (_: " in prompt and "// Weather now." in prompt


harmony_names = compact_names.filter(lambda n: "<|" not in n)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls=openai_calls(harmony_names), content=contents())
def test_round_trip(calls: list[dict], content: str) -> None:
    parser = get_parser("gpt-oss")
    result = parser.parse(parser.format(calls, content=content))
    assert result.errors == [] and result.content == content
    assert [(c.name, c.arguments) for c in result.calls] == [(c["function"]["name"], c["function"]["arguments"]) for c in calls]
