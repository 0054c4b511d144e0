"""The Qwen3-Coder XML format: values typed by the tools' schemas, its chat template, and broken calls."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers.utils.chat_template_utils import render_jinja_template

from agentgym.parsers import Qwen3CoderToolCallParser, chat_template, get_parser

from .strategies import contents, markup_soup

HINT = Qwen3CoderToolCallParser.call_hint
TOOLS = [{"type": "function", "function": {"name": "search", "description": "Search the web.", "parameters": {
    "type": "object",
    "properties": {"query": {"type": "string"}, "k": {"type": "integer"}, "exact": {"type": "boolean"},
                   "weights": {"type": "array"}, "filters": {"type": "object"}, "score": {"type": "number"},
                   "lang": {"type": ["string", "null"]}, "when": {"anyOf": [{"type": "integer"}, {"type": "string"}]}},
    "required": ["query"]}}}]  # fmt: skip


def test_values_take_the_types_of_the_schema() -> None:
    text = (
        "Let me look.\n<tool_call>\n<function=search>\n<parameter=query>\nline one\nline two\n</parameter>\n"
        "<parameter=k>\n3\n</parameter>\n<parameter=exact>\nTrue\n</parameter>\n<parameter=weights>\n[1, 2.5]\n"
        '</parameter>\n<parameter=filters>\n{"site": "a.org"}\n</parameter>\n<parameter=score>\n0.5\n</parameter>\n'
        "<parameter=lang>\nNone\n</parameter>\n<parameter=when>\nyesterday\n</parameter>\n</function>\n</tool_call>"
    )
    result = get_parser("qwen3_coder", TOOLS).parse(text)
    assert result.errors == [] and result.content == "Let me look."
    assert result.calls[0].name == "search"
    assert result.calls[0].arguments == {"query": "line one\nline two", "k": 3, "exact": True, "weights": [1, 2.5],
                                         "filters": {"site": "a.org"}, "score": 0.5, "lang": None, "when": "yesterday"}


def test_unknown_types_and_values_that_do_not_fit_stay_text() -> None:
    text = ("<tool_call>\n<function=search>\n<parameter=k>\nthree\n</parameter>\n<parameter=extra>\n7\n</parameter>\n"
            "</function>\n</tool_call>")
    assert get_parser("qwen3_coder", TOOLS).parse(text).calls[0].arguments == {"k": "three", "extra": "7"}
    assert get_parser("qwen3_coder").parse(text).calls[0].arguments == {"k": "three", "extra": "7"}


def test_only_one_newline_is_trimmed_on_each_side() -> None:
    text = "<tool_call>\n<function=f>\n<parameter=code>\n\n  x = 1\n\n</parameter>\n</function>\n</tool_call>"
    assert get_parser("qwen3_coder").parse(text).calls[0].arguments == {"code": "\n  x = 1\n"}


def test_values_may_hold_the_markup() -> None:
    parser = get_parser("qwen3_coder", TOOLS)
    query = "<tool_call>\n<function=x>\n</function>\n</tool_call> and <parameter=k>"
    text = parser.format([{"name": "search", "arguments": {"query": query, "k": 2}}], content="Two.") + "\nafter"
    result = parser.parse(text)
    assert result.errors == [] and result.content == "Two.\n\nafter"
    assert result.calls[0].arguments == {"query": query, "k": 2}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("<tool_call>\nsearch(query='x')\n</tool_call>", 'expected <function=NAME> after <tool_call>, found "search(query=\'x\')\\n"'),
        ("<tool_call>\n<function=search\n</tool_call>", "the <function=NAME> tag is never closed with '>'"),
        ("<tool_call>\n<function= >\n</function>\n</tool_call>", "the function name in <function=NAME> is empty"),
        ("<tool_call>\n<function=search>\n<parameter=query>\nx\n</parameter>\n</tool_call>", "the call of 'search' has no closing </function> tag"),
        ("<tool_call>\n<function=search>\n<parameter=query>\nx\n</function>\n</tool_call>", "parameter 'query' of 'search' has no closing </parameter> tag"),
        ("<tool_call>\n<function=search>\n<parameter=query>x</parameter><parameter=query>y</parameter></function></tool_call>", "parameter 'query' of 'search' is given twice"),
        ("<tool_call>\n<function=search>\nquery: x\n</function>\n</tool_call>", 'expected <parameter=ARG> or </function> in the call of \'search\', found "query: x\\n</function>\\n"'),
        ("<tool_call>\n<function=search>\n</function>\nand more\n</tool_call>", 'unexpected text after </function>: "and more\\n"'),
        ("<tool_call>\n<function=search>\n<parameter= >\nx\n</parameter>\n</function>\n</tool_call>", "a parameter name in the call of 'search' is empty"),
        ("<tool_call>\n<function=search>\n<parameter=query\n</function>\n</tool_call>", "a <parameter=ARG> tag in the call of 'search' is never closed with '>'"),
    ],
)
def test_broken_calls_become_messages_for_the_model(text: str, problem: str) -> None:
    result = get_parser("qwen3_coder", TOOLS).parse("Before. " + text + " After.")
    assert result.calls == [] and result.content == "Before.  After."
    assert [(e.index, e.message, e.raw) for e in result.errors] == [(1, f"Tool call 1 could not be parsed: {problem}. {HINT}", text)]


def test_an_unclosed_call_ends_at_the_next_one() -> None:
    text = "<tool_call>\n<function=a>\n<parameter=x>\n1\n<tool_call>\n<function=b>\n</function>\n</tool_call>"
    result = get_parser("qwen3_coder").parse(text)
    assert [c.name for c in result.calls] == ["b"] and [c.index for c in result.calls] == [2]
    assert result.errors[0].index == 1 and "no closing </parameter>" in result.errors[0].message


def test_a_complete_call_without_its_closing_tag_still_runs() -> None:
    result = get_parser("qwen3_coder").parse("<tool_call>\n<function=a>\n<parameter=x>\n1\n</parameter>\n</function>")
    assert [(c.name, c.arguments) for c in result.calls] == [("a", {"x": "1"})] and result.errors == []


def test_format_and_the_chat_template_write_the_same_turn() -> None:
    calls = [{"id": "c1", "type": "function", "function": {"name": "search", "arguments": {
        "query": "Zürich\nweather", "k": 3, "exact": False, "weights": [0.5], "filters": {"a": [1]}, "lang": None}}},
        {"type": "function", "function": {"name": "search", "arguments": {"query": "b"}}}]  # fmt: skip
    before = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "weather?"}]
    turn = {"role": "assistant", "content": "Checking.", "tool_calls": calls}
    template = chat_template("qwen3_coder")
    prompt = render_jinja_template([before], tools=TOOLS, chat_template=template, add_generation_prompt=True)[0][0]
    full = render_jinja_template([[*before, turn, {"role": "tool", "content": "sunny"}]], tools=TOOLS,
                                 chat_template=template)[0][0]
    parser = get_parser("qwen3_coder", TOOLS)
    assert full.startswith(prompt)
    generated = parser.format(calls, content="Checking.")
    assert full[len(prompt):] == generated + "<|im_end|>\n<|im_start|>user\n<tool_response>\nsunny\n</tool_response><|im_end|>\n"
    result = parser.parse(generated + "<|im_end|>")
    assert result.content == "Checking." and [c.arguments for c in result.calls] == [c["function"]["arguments"] for c in calls]
    assert "<name>search</name>" in prompt and "<type>integer</type>" in prompt


names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,15}", fullmatch=True)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(scalars | st.text(max_size=10), lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=6)
values = (scalars | json_values | (st.text() | markup_soup).filter(lambda v: "</parameter>" not in v))

_TYPE = {type(None): "null", bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls=st.lists(st.tuples(names, st.dictionaries(names, values, max_size=4)), max_size=3),
       content=contents().filter(lambda t: "<tool_call>" not in t and "<parameter=" not in t))
def test_round_trip(calls: list[tuple[str, dict]], content: str) -> None:
    tools = [{"name": f"{name}", "parameters": {"properties": {k: {"type": _TYPE[type(v)]} for k, v in args.items()}}}
             for name, args in calls]
    parser = get_parser("qwen3_coder", tools)
    # one schema per name: a later call of the same name must agree on types to round-trip
    calls = [(name, args) for name, args in calls if parser.param_types[name] == {k: (_TYPE[type(v)],) for k, v in args.items()}]
    text = parser.format([{"name": n, "arguments": a} for n, a in calls], content=content)
    result = parser.parse(text)
    assert result.errors == [] and result.content == content
    assert [(c.name, c.arguments) for c in result.calls] == calls
