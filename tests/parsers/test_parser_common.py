"""Choosing a parser by name, the call shapes `format` accepts, and behaviour every format shares."""

from __future__ import annotations

import pytest

from agentgym.errors import ConfigError
from agentgym.parsers import ParsedToolCall, available_parsers, get_parser
from agentgym.tools.schemas import OpenAIFunctionCallSchema, OpenAIFunctionParsedSchema, OpenAIFunctionToolCall


def test_available_parsers_lists_every_name_and_alias() -> None:
    assert available_parsers() == [
        "gpt-oss", "gpt_oss", "harmony", "hermes", "llama3", "llama3_json", "mistral", "mistral_v11", "mistral_v13",
        "qwen", "qwen25", "qwen3", "qwen3_coder",
    ]  # fmt: skip
    for name in available_parsers():
        assert get_parser(name).parse("plain text").content == "plain text"


def test_unknown_name_lists_the_available_ones() -> None:
    with pytest.raises(ConfigError) as info:
        get_parser("qwen2")
    assert str(info.value) == (
        "unknown tool-call parser 'qwen2'. Fix: use one of: "
        "gpt-oss, gpt_oss, harmony, hermes, llama3, llama3_json, mistral, mistral_v11, mistral_v13, qwen, qwen25, "
        "qwen3, qwen3_coder."
    )


def test_parser_names_say_which_format_they_write() -> None:
    assert [get_parser(n).name for n in ("qwen3", "llama3", "mistral", "mistral_v11", "mistral_v13")] == [
        "hermes", "llama3_json", "mistral", "mistral_v11", "mistral_v13",
    ]  # fmt: skip


def test_format_accepts_every_call_shape() -> None:
    parser = get_parser("hermes")
    expected = parser.format([{"name": "f", "arguments": {"x": 1}}])
    shapes = [
        ParsedToolCall(name="f", arguments={"x": 1}, id="call_1", raw="", index=1),
        OpenAIFunctionToolCall(id="call_1", function=OpenAIFunctionCallSchema(name="f", arguments={"x": 1})),
        OpenAIFunctionCallSchema(name="f", arguments={"x": 1}),
        OpenAIFunctionParsedSchema(name="f", arguments='{"x": 1}'),
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
    ]
    for shape in shapes:
        assert parser.format([shape]) == expected


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        ({"function": {"arguments": {}}}, ValueError, "has no name"),
        ({"name": "f", "arguments": "{"}, ValueError, "arguments of tool call 'f' are not valid JSON"),
        ({"name": "f", "arguments": "[1]"}, ValueError, "arguments of tool call 'f' must be a JSON object, got an array"),
        ({"name": "f", "arguments": [1]}, ValueError, "arguments of tool call 'f' must be a JSON object, got list"),
        ("f(x=1)", TypeError, "cannot format a tool call of type str"),
    ],
)
def test_format_refuses_calls_it_cannot_express(call: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message.replace("[", r"\[")):
        get_parser("hermes").format([call])  # type: ignore[list-item]


def test_parsed_call_converts_to_the_openai_schema() -> None:
    call = get_parser("hermes").parse('<tool_call>{"name": "f", "arguments": {"q": "ü"}}</tool_call>').calls[0]
    openai = call.to_openai()
    assert (openai.id, openai.type, openai.function.name, openai.function.arguments) == (call.id, "function", "f", {"q": "ü"})
    assert call.arguments_json() == '{"q": "ü"}'


@pytest.mark.parametrize(
    ("name", "unit"),
    [("hermes", "<tool_call>{"), ("hermes", '<tool_call>["'), ("mistral", "[TOOL_CALLS][{"), ("mistral_v13", "[TOOL_CALLS]f[ARGS]{")],
)
def test_a_degenerate_repetition_gives_one_error_per_attempt(name: str, unit: str) -> None:
    result = get_parser(name).parse(unit * 5000)
    assert result.calls == [] and [e.index for e in result.errors] == list(range(1, 5001))


@pytest.mark.parametrize("name", ["hermes", "mistral", "mistral_v13"])
def test_arguments_may_hold_many_copies_of_the_markup(name: str) -> None:
    parser = get_parser(name)
    arguments = {"s": "<tool_call>[TOOL_CALLS]</tool_call>[ARGS]" * 200, "t": ["<tool_call>"] * 50}
    text = parser.format([{"name": "f", "arguments": arguments}] * 2, content="Both.")
    result = parser.parse(text)
    assert result.errors == [] and result.content == "Both."
    assert [c.arguments for c in result.calls] == [arguments, arguments]


@pytest.mark.parametrize("name", ["hermes", "mistral"])
@pytest.mark.parametrize("piece", ["\x1f", "\ud83d\ude00", "😀", "\\", '"', "\n"])
def test_escapes_right_before_markup_inside_a_string(name: str, piece: str) -> None:
    """JSON escapes that end just before a marker, in the name and in the arguments."""
    parser = get_parser(name)
    markup = "<tool_call>" if name == "hermes" else "[TOOL_CALLS]"
    arguments = {"k": piece + markup + piece}
    result = parser.parse(parser.format([{"name": piece + markup, "arguments": arguments}]))
    assert result.errors == []
    assert [(c.name, c.arguments) for c in result.calls] == [(piece + markup, arguments)]
