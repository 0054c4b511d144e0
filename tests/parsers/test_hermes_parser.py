"""The `<tool_call>` format of Hermes/Qwen models: what is accepted, and the exact message for every error."""

from __future__ import annotations

import pytest

from agentgym.parsers import HermesToolCallParser, get_parser

HINT = 'Write the call as <tool_call>{"name": ..., "arguments": {...}}</tool_call>.'


@pytest.fixture
def parser() -> HermesToolCallParser:
    return HermesToolCallParser()


def test_qwen_turn_with_text_and_two_calls(parser: HermesToolCallParser) -> None:
    text = (
        "Let me look both up.\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Zürich"}}\n</tool_call>\n<tool_call>\n'
        '{"name": "get_time", "arguments": {"tz": "Europe/Zurich"}}\n</tool_call><|im_end|>'
    )
    result = parser.parse(text)
    assert result.content == "Let me look both up."
    assert result.errors == []
    assert [(c.index, c.name, c.arguments) for c in result.calls] == [
        (1, "get_weather", {"city": "Zürich"}),
        (2, "get_time", {"tz": "Europe/Zurich"}),
    ]
    assert result.calls[0].raw == '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich"}}\n</tool_call>'
    assert result.calls[0].id.startswith("call_") and result.calls[0].id != result.calls[1].id
    assert result.has_call_attempts


def test_plain_answer_has_no_calls(parser: HermesToolCallParser) -> None:
    result = parser.parse("  The answer is 42.  ")
    assert (result.content, result.calls, result.errors, result.has_call_attempts) == ("The answer is 42.", [], [], False)


def test_closing_tag_inside_a_json_string_does_not_end_the_call(parser: HermesToolCallParser) -> None:
    result = parser.parse('<tool_call>{"name": "echo", "arguments": {"s": "a</tool_call>b<tool_call>"}}</tool_call> done')
    assert [(c.name, c.arguments) for c in result.calls] == [("echo", {"s": "a</tool_call>b<tool_call>"})]
    assert result.content == "done"


@pytest.mark.parametrize(
    ("text", "arguments"),
    [
        ('<tool_call>{"name": "f", "arguments": "{\\"q\\": 2}"}</tool_call>', {"q": 2}),  # arguments as a JSON string
        ('<tool_call>{"name": "f", "parameters": {"q": 2}}</tool_call>', {"q": 2}),
        ('<tool_call>{"name": "f"}</tool_call>', {}),
        ('<tool_call>{"name": "f", "arguments": null}</tool_call>', {}),
        ('<tool_call>{"name": "f", "arguments": ""}</tool_call>', {}),
        ('<tool_call>\n{"name": "f", "arguments": {"q": 2}}\n', {"q": 2}),  # unclosed final tag, complete JSON
    ],
)
def test_lenient_but_unambiguous_calls_are_accepted(parser: HermesToolCallParser, text: str, arguments: dict) -> None:
    result = parser.parse(text)
    assert result.errors == []
    assert [(c.name, c.arguments) for c in result.calls] == [("f", arguments)]


def test_missing_closing_tag_before_the_next_call(parser: HermesToolCallParser) -> None:
    result = parser.parse('<tool_call>{"name": "a", "arguments": {}}\n<tool_call>{"name": "b", "arguments": {}}</tool_call>')
    assert [c.name for c in result.calls] == ["a", "b"] and result.errors == []


def _problem(parser: HermesToolCallParser, text: str) -> str:
    result = parser.parse(text)
    assert result.calls == [] and len(result.errors) == 1
    message = result.errors[0].message
    prefix, suffix = "Tool call 1 could not be parsed: ", ". " + HINT
    assert message.startswith(prefix) and message.endswith(suffix)
    return message[len(prefix) : -len(suffix)]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('<tool_call>{"name": "a" "arguments": {}}</tool_call>', "invalid JSON at line 1 column 14 (expected ',' or '}')"),
        ('<tool_call>{"name": "a", "arguments": {"xs": [1 2]}}</tool_call>', "invalid JSON at line 1 column 38 (expected ',' or ']')"),
        ('<tool_call>{"name": "a", "arguments": }</tool_call>', "invalid JSON at line 1 column 28 (expected a value)"),
        ('<tool_call>{"name": "a", "arguments": {"x": 1,}}</tool_call>', "invalid JSON at line 1 column 36 (expected a property name in double quotes)"),
        ('<tool_call>{"name" "a"}</tool_call>', "invalid JSON at line 1 column 9 (expected ':' after the property name)"),
        ('<tool_call>{"name": "a", "arguments": {"x": "a\nb"}}</tool_call>', "invalid JSON at line 1 column 36 (a string contains a raw control character; escape it, e.g. \\n)"),
        ('<tool_call>{"name": "a", "arguments": {"x": "\\q"}}</tool_call>', "invalid JSON at line 1 column 35 (invalid escape sequence in a string)"),
        ('<tool_call>{"name": "a", "arguments": {"x": "abc}}</tool_call>', "invalid JSON at line 1 column 34 (a string is never closed)"),
        (
            '<tool_call>\n{"name": "a",\n "arguments": {"x": [1, 2',
            "invalid JSON at line 2 column 26 (the JSON ends before the value is complete), and the closing </tool_call> tag is missing",
        ),
        ("<tool_call>\n</tool_call>", "the <tool_call> block is empty"),
        ("<tool_call>", "the <tool_call> block is empty, and the closing </tool_call> tag is missing"),
        ('<tool_call>{"name": "a", "arguments": {}}}</tool_call>', 'unexpected text after the JSON object at line 1 column 31: "}"'),
        ('<tool_call>{"name": "a"} Done.</tool_call>', 'unexpected text after the JSON object at line 1 column 15: "Done."'),
        ('<tool_call>[{"name": "a", "arguments": {}}]</tool_call>', "expected a JSON object, got an array"),
        ('<tool_call>{"arguments": {}}</tool_call>', 'the object has no "name" field'),
        ('<tool_call>{"name": 42, "arguments": {}}</tool_call>', '"name" must be a non-empty string, got a number'),
        ('<tool_call>{"name": " ", "arguments": {}}</tool_call>', '"name" must be a non-empty string, got " "'),
        ('<tool_call>{"name": "a", "arguments": {}, "parameters": {}}</tool_call>', 'both "arguments" and "parameters" are given; use only "arguments"'),
        ('<tool_call>{"name": "a", "arguments": [1]}</tool_call>', '"arguments" must be a JSON object, got an array'),
        ('<tool_call>{"name": "a", "parameters": 3}</tool_call>', '"parameters" must be a JSON object, got a number'),
        ('<tool_call>{"name": "a", "arguments": "x=1"}</tool_call>', '"arguments" is a string that is not valid JSON; give the arguments as a JSON object'),
        ('<tool_call>{"name": "a", "arguments": "[1, 2]"}</tool_call>', '"arguments" must be a JSON object, got a string holding an array'),
        ("<tool_call>" + "[" * 100_000 + "</tool_call>", "invalid JSON (nested too deeply)"),
        ('<tool_call>{"name": "a", "arguments": {"x": ' + "7" * 5000 + "}}</tool_call>", "invalid JSON (a number has more than 4300 digits)"),
    ],
)
def test_error_messages(parser: HermesToolCallParser, text: str, problem: str) -> None:
    assert _problem(parser, text) == problem


def test_errors_are_numbered_with_the_calls_and_keep_their_raw_text(parser: HermesToolCallParser) -> None:
    broken = '<tool_call>{"name": "b" "arguments": {}}</tool_call>'
    text = f'Two calls.\n<tool_call>{{"name": "a", "arguments": {{}}}}</tool_call>\n{broken}\n<tool_call>{{"name": "c"}}</tool_call>'
    result = parser.parse(text)
    assert result.content == "Two calls."
    assert [(c.index, c.name) for c in result.calls] == [(1, "a"), (3, "c")]
    assert [(e.index, e.raw) for e in result.errors] == [(2, broken)]
    assert result.errors[0].message == (
        "Tool call 2 could not be parsed: invalid JSON at line 1 column 14 (expected ',' or '}'). " + HINT
    )


def test_text_around_a_broken_call_stays_content(parser: HermesToolCallParser) -> None:
    result = parser.parse('Before <tool_call>{"name": </tool_call> after')
    assert result.content == "Before  after" and len(result.errors) == 1


def test_format_matches_the_qwen3_template_layout(parser: HermesToolCallParser) -> None:
    calls = [
        {"id": "x", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Zürich"}'}},
        {"name": "get_time", "arguments": {}},
    ]
    assert parser.format(calls, content="Checking.") == (
        'Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
    )
    assert parser.format(calls[1:]) == '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
    assert parser.format([], content="Just text.") == "Just text."


@pytest.mark.parametrize("alias", ["hermes", "qwen", "qwen25", "qwen3"])
def test_aliases_select_this_format(alias: str) -> None:
    assert isinstance(get_parser(alias), HermesToolCallParser)
