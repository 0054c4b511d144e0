"""Llama 3.x JSON tool calls: what is accepted, what stays content, and the exact message for every error."""

from __future__ import annotations

import pytest

from agentgym.parsers import Llama3JsonToolCallParser, get_parser

HINT = 'Write each call as {"name": ..., "parameters": {...}} and separate several calls with a semicolon.'


@pytest.fixture
def parser() -> Llama3JsonToolCallParser:
    return Llama3JsonToolCallParser()


@pytest.mark.parametrize(
    ("text", "content", "calls"),
    [
        ('{"name": "a", "parameters": {"x": 1}}<|eot_id|>', "", [("a", {"x": 1})]),
        ('{"name": "a", "parameters": {"x": 1}}; {"name": "b", "arguments": {}};', "", [("a", {"x": 1}), ("b", {})]),
        ('<|python_tag|>{"name": "a", "parameters": {}}<|eom_id|>', "", [("a", {})]),
        ('Sure.<|python_tag|>{"name": "a", "parameters": {}}', "Sure.", [("a", {})]),
        ('{"name": "a", "parameters": "{\\"x\\": 1}"}', "", [("a", {"x": 1})]),
        ('{"name": "a", "parameters": {}} I will wait.', "I will wait.", [("a", {})]),
        ('{"name": "say", "parameters": {"s": "<|python_tag|>"}}', "", [("say", {"s": "<|python_tag|>"})]),
        ('{"answer": 42}', '{"answer": 42}', []),  # a JSON answer is not a call attempt
        ("{x | x > 0} is the set.", "{x | x > 0} is the set.", []),
        ("The answer is 42.", "The answer is 42.", []),
    ],
)
def test_accepted_turns(parser: Llama3JsonToolCallParser, text: str, content: str, calls: list) -> None:
    result = parser.parse(text)
    assert result.errors == []
    assert result.content == content
    assert [(c.name, c.arguments) for c in result.calls] == calls
    assert [c.index for c in result.calls] == list(range(1, len(calls) + 1))


@pytest.mark.parametrize(
    ("text", "index", "problem", "raw"),
    [
        (
            '{"name": "a", "parameters": {"x": 1}',
            1,
            "invalid JSON at line 1 column 37 (the JSON ends before the value is complete)",
            '{"name": "a", "parameters": {"x": 1}',
        ),
        (
            '{"name": "a", "parameters": {}}; {"name": "b" "parameters": {}}',
            2,
            "invalid JSON at line 1 column 14 (expected ',' or '}')",
            '{"name": "b" "parameters": {}}',
        ),
        ('{"name": "a", "parameters": {}}; oops', 2, "invalid JSON at line 1 column 1 (expected a value)", "oops"),
        (
            '<|python_tag|>brave_search.call(query="x")',
            1,
            'expected a JSON object after <|python_tag|>, found "brave_search.call(query=\\"x\\")"',
            '<|python_tag|>brave_search.call(query="x")',
        ),
        ("Let me check.<|python_tag|>  ", 1, "nothing follows <|python_tag|>", "<|python_tag|>  "),
        ('{"parameters": {}}', 1, 'the object has no "name" field', '{"parameters": {}}'),
        (
            '{"name": "a", "parameters": {}, "arguments": {}}',
            1,
            'both "parameters" and "arguments" are given; use only "parameters"',
            '{"name": "a", "parameters": {}, "arguments": {}}',
        ),
        ('{"name": "a", "parameters": [1]}', 1, '"parameters" must be a JSON object, got an array', '{"name": "a", "parameters": [1]}'),
        ('<|python_tag|>{"name": ""}', 1, '"name" must be a non-empty string, got ""', '{"name": ""}'),
    ],
)
def test_error_messages(parser: Llama3JsonToolCallParser, text: str, index: int, problem: str, raw: str) -> None:
    result = parser.parse(text)
    assert len(result.errors) == 1 and len(result.calls) == index - 1
    error = result.errors[0]
    assert (error.index, error.message, error.raw) == (index, f"Tool call {index} could not be parsed: {problem}. {HINT}", raw)


def test_format_matches_the_llama31_template(parser: Llama3JsonToolCallParser) -> None:
    calls = [{"function": {"name": "get_weather", "arguments": {"city": "Zürich"}}}, {"name": "noop", "arguments": "{}"}]
    assert parser.format(calls[:1]) == '{"name": "get_weather", "parameters": {"city": "Zürich"}}'
    assert parser.format(calls) == '{"name": "get_weather", "parameters": {"city": "Zürich"}}; {"name": "noop", "parameters": {}}'
    assert parser.format(calls[1:], content="Checking.") == 'Checking.<|python_tag|>{"name": "noop", "parameters": {}}'


def test_alias() -> None:
    assert isinstance(get_parser("llama3"), Llama3JsonToolCallParser)
