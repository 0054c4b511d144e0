"""Round trips (format, then parse, gives back the calls and the content) and robustness on arbitrary text."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentgym.parsers import ParseResult, get_parser

from .strategies import compact_names, contents, markup_soup, names, openai_calls

FORMATS = ["hermes", "llama3_json", "mistral", "mistral_v11", "mistral_v13", "qwen3_coder", "gpt-oss"]
IDS_KEPT = {"mistral", "mistral_v11"}
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _round_trip(parser_name: str, calls: list[dict], content: str) -> None:
    parser = get_parser(parser_name)
    text = parser.format(calls, content=content)
    result = parser.parse(text)
    assert result.errors == []
    assert result.content == content
    assert [(c.name, c.arguments) for c in result.calls] == [(c["function"]["name"], c["function"]["arguments"]) for c in calls]
    assert [c.index for c in result.calls] == list(range(1, len(calls) + 1))
    if parser_name in IDS_KEPT:
        assert [c.id for c in result.calls] == [c["id"] for c in calls]
    for call in result.calls:
        assert call.raw in text


@pytest.mark.parametrize("parser_name", ["hermes", "mistral"])
@SETTINGS
@given(data=st.data())
def test_round_trip_json_named_formats(parser_name: str, data: st.DataObject) -> None:
    _round_trip(parser_name, data.draw(openai_calls(names)), data.draw(contents()))


@SETTINGS
@given(calls=openai_calls(names), content=contents(llama=True))
def test_round_trip_llama3_json(calls: list[dict], content: str) -> None:
    _round_trip("llama3_json", calls, content)


@pytest.mark.parametrize("parser_name", ["mistral_v11", "mistral_v13"])
@SETTINGS
@given(data=st.data())
def test_round_trip_mistral_compact(parser_name: str, data: st.DataObject) -> None:
    _round_trip(parser_name, data.draw(openai_calls(compact_names)), data.draw(contents()))


def _check_invariants(result: ParseResult, text: str, hint: str) -> None:
    assert isinstance(result.content, str)
    indices = sorted([c.index for c in result.calls] + [e.index for e in result.errors])
    assert indices == list(range(1, len(indices) + 1))
    for error in result.errors:
        assert error.message.startswith(f"Tool call {error.index} could not be parsed: ")
        assert error.message.endswith(". " + hint)
        assert error.raw in text
    for call in result.calls:
        assert isinstance(call.name, str) and call.name.strip()
        assert isinstance(call.arguments, dict)
        assert call.raw in text


@pytest.mark.parametrize("parser_name", FORMATS)
@settings(max_examples=500, deadline=None)
@given(text=st.text() | markup_soup)
def test_arbitrary_text_never_raises(parser_name: str, text: str) -> None:
    parser = get_parser(parser_name)
    _check_invariants(parser.parse(text), text, parser.call_hint)


@pytest.mark.parametrize("parser_name", FORMATS)
@SETTINGS
@given(data=st.data())
def test_damaged_formatted_text_never_raises(parser_name: str, data: st.DataObject) -> None:
    """Well-formed output cut off, or with a piece of markup spliced in, anywhere."""
    parser = get_parser(parser_name)
    name_strategy = compact_names if parser_name in ("mistral_v11", "mistral_v13") else names
    text = parser.format(data.draw(openai_calls(name_strategy)), content=data.draw(contents()))
    cut = data.draw(st.integers(0, len(text)))
    splice = data.draw(st.sampled_from(["", "}", "{", '"', "]", ",", "<tool_call>", "</tool_call>", "[TOOL_CALLS]", ";",
                                        "<parameter=", "</parameter>", "</function>", "<|call|>", "<|start|>", "<|message|>"]))
    damaged = text[:cut] + splice + (text[cut:] if data.draw(st.booleans()) else "")
    _check_invariants(parser.parse(damaged), damaged, parser.call_hint)
