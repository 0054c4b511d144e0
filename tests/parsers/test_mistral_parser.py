"""Mistral `[TOOL_CALLS]` formats (v3/v7 JSON list, v11 with [CALL_ID], v13 compact): accepted forms, exact errors."""

from __future__ import annotations

import re

import pytest

from agentgym.parsers import MistralToolCallParser, get_parser

ARRAY_HINT = 'Write the calls as [TOOL_CALLS][{"name": ..., "arguments": {...}}].'
V13_HINT = "Write each call as [TOOL_CALLS]name[ARGS]{...} with the arguments as a JSON object."


@pytest.fixture
def parser() -> MistralToolCallParser:
    return MistralToolCallParser()


@pytest.mark.parametrize(
    ("text", "content", "calls"),
    [
        (
            '[TOOL_CALLS][{"name": "a", "arguments": {"x": 1}, "id": "abcDEF123"}, {"name": "b", "arguments": {}}]</s>',
            "",
            [("a", {"x": 1}), ("b", {})],
        ),
        ('Sure. [TOOL_CALLS] [{"name": "a", "arguments": {}}]', "Sure.", [("a", {})]),  # SentencePiece spacing
        ('[TOOL_CALLS][{"name": "a", "arguments": {}},]', "", [("a", {})]),  # trailing comma
        ('[TOOL_CALLS][{"name": "a", "arguments": {}}', "", [("a", {})]),  # list cut off after a complete call
        ('[TOOL_CALLS]{"name": "a", "arguments": {}}', "", [("a", {})]),  # a bare object
        ('[TOOL_CALLS]get_weather[ARGS]{"city": "Zürich"}[TOOL_CALLS]search[ARGS]{"q": "[ARGS]"}', "", [("get_weather", {"city": "Zürich"}), ("search", {"q": "[ARGS]"})]),
        ('[TOOL_CALLS]get_weather{"city": "x"}', "", [("get_weather", {"city": "x"})]),  # [ARGS] lost
        ('[TOOL_CALLS]f[ARGS]"{\\"a\\": 1}"', "", [("f", {"a": 1})]),  # arguments as a JSON string
        ('[TOOL_CALLS]f[CALL_ID]abcDEF123[ARGS]{"a": 1} trailing[TOOL_CALLS]g[ARGS]{}', "trailing", [("f", {"a": 1}), ("g", {})]),
        ("No tools needed.</s>", "No tools needed.", []),
    ],
)
def test_accepted_turns(parser: MistralToolCallParser, text: str, content: str, calls: list) -> None:
    result = parser.parse(text)
    assert result.errors == []
    assert result.content == content
    assert [(c.name, c.arguments) for c in result.calls] == calls


def test_ids_written_by_the_model_are_kept_and_missing_ones_are_mistral_shaped(parser: MistralToolCallParser) -> None:
    text = '[TOOL_CALLS][{"name": "a", "arguments": {}, "id": "abcDEF123"}, {"name": "b", "arguments": {}}]'
    first, second = parser.parse(text).calls
    assert first.id == "abcDEF123"
    assert re.fullmatch(r"[A-Za-z0-9]{9}", second.id)
    assert parser.parse("[TOOL_CALLS]f[CALL_ID]xyzXYZ789[ARGS]{}").calls[0].id == "xyzXYZ789"


@pytest.mark.parametrize(
    ("text", "index", "problem", "raw"),
    [
        (
            '[TOOL_CALLS][{"name": "a", "arguments": {}}, {"name": "b" "arguments": {}}]',
            2,
            "invalid JSON at line 1 column 14 (expected ',' or '}')",
            '{"name": "b" "arguments": {}}]',
        ),
        ("[TOOL_CALLS][ ]", 1, "the list after [TOOL_CALLS] is empty", "[ ]"),
        (
            '[TOOL_CALLS][{"name": "a", "arguments": {}} {"name": "b"}]',
            1,
            'expected \',\' or \']\' at line 1 column 32, found "{\\"name\\": \\"b\\"}]"',
            '{"name": "a", "arguments": {}} {"name": "b"}]',
        ),
        ("[TOOL_CALLS][ARGS]{}", 1, "no function name between [TOOL_CALLS] and [ARGS]", "[TOOL_CALLS][ARGS]{}"),
        ("[TOOL_CALLS]get weather[ARGS]{}", 1, 'the function name "get weather" contains whitespace', "[TOOL_CALLS]get weather[ARGS]{}"),
        ('[TOOL_CALLS]f(x="1")', 1, "expected [ARGS] and a JSON object after the function name", '[TOOL_CALLS]f(x="1")'),
        ("[TOOL_CALLS]f[CALL_ID]abc", 1, "expected [ARGS] after the call id", "[TOOL_CALLS]f[CALL_ID]abc"),
        ("[TOOL_CALLS]f[THINK]{}", 1, 'expected [ARGS] after the function name, found "[THINK]{}"', "[TOOL_CALLS]f[THINK]{}"),
        ('[TOOL_CALLS]f[ARGS]{"city": }', 1, "invalid JSON at line 1 column 10 (expected a value)", '[TOOL_CALLS]f[ARGS]{"city": }'),
        ("[TOOL_CALLS]f[ARGS][1]", 1, '"arguments" must be a JSON object, got an array', "[TOOL_CALLS]f[ARGS][1]"),
        ('[TOOL_CALLS][{"arguments": {}}]', 1, 'the object has no "name" field', '{"arguments": {}}'),
    ],
)
def test_error_messages(parser: MistralToolCallParser, text: str, index: int, problem: str, raw: str) -> None:
    result = parser.parse(text)
    assert len(result.errors) == 1 and len(result.calls) == index - 1
    error = result.errors[0]
    assert (error.index, error.message, error.raw) == (index, f"Tool call {index} could not be parsed: {problem}. {ARRAY_HINT}", raw)


def test_a_broken_compact_call_does_not_hide_the_next_one() -> None:
    result = get_parser("mistral_v13").parse('[TOOL_CALLS]f[ARGS]{"city": }[TOOL_CALLS]g[ARGS]{}')
    assert [(c.index, c.name) for c in result.calls] == [(2, "g")]
    assert [e.message for e in result.errors] == [
        f"Tool call 1 could not be parsed: invalid JSON at line 1 column 10 (expected a value). {V13_HINT}"
    ]


def test_format_in_each_style() -> None:
    calls = [
        {"id": "abcDEF123", "function": {"name": "get_weather", "arguments": {"city": "Zürich"}}},
        {"id": "xyzXYZ789", "function": {"name": "noop", "arguments": "{}"}},
    ]
    assert get_parser("mistral").format(calls, content="Ok.") == (
        'Ok.[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Zürich"}, "id": "abcDEF123"}, '
        '{"name": "noop", "arguments": {}, "id": "xyzXYZ789"}]'
    )
    assert get_parser("mistral_v11").format(calls) == (
        '[TOOL_CALLS]get_weather[CALL_ID]abcDEF123[ARGS]{"city": "Zürich"}[TOOL_CALLS]noop[CALL_ID]xyzXYZ789[ARGS]{}'
    )
    assert get_parser("mistral_v13").format(calls) == '[TOOL_CALLS]get_weather[ARGS]{"city": "Zürich"}[TOOL_CALLS]noop[ARGS]{}'
    assert get_parser("mistral_v13").format([], content="Ok.") == "Ok."
    generated = get_parser("mistral").parse(get_parser("mistral").format([{"name": "f", "arguments": {}}])).calls[0].id
    assert re.fullmatch(r"[A-Za-z0-9]{9}", generated)


@pytest.mark.parametrize("name", ["get weather", "f[x]", "f{"])
def test_compact_format_refuses_names_it_cannot_write(name: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"function name {name!r} cannot be written in Mistral's")):
        get_parser("mistral_v13").format([{"name": name, "arguments": {}}])


def test_v11_format_refuses_ids_it_cannot_write() -> None:
    with pytest.raises(ValueError, match=re.escape("call id 'call 1' cannot be written in Mistral's v11 format")):
        get_parser("mistral_v11").format([{"id": "call 1", "function": {"name": "f", "arguments": {}}}])


def test_unknown_style_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown Mistral tool-call style 'v2'; use one of"):
        MistralToolCallParser(style="v2")  # type: ignore[arg-type]
