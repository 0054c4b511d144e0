"""Mistral's `[TOOL_CALLS]` formats, by tokenizer version (mistral-common):

- v3/v7 (Mistral-7B-Instruct-v0.3, Nemo, Mixtral): `[TOOL_CALLS][{"name": ..., "arguments": {...}, "id": "abcDEF123"}, ...]`
- v11 (Mistral-Small-3.2): `[TOOL_CALLS]name[CALL_ID]abcDEF123[ARGS]{...}`, repeated once per call
- v13+ (Magistral, Ministral-3, Devstral-2): `[TOOL_CALLS]name[ARGS]{...}`, repeated once per call

Every parser reads all three forms (and a bare object after `[TOOL_CALLS]`); `style` only picks what `format`
writes. Text before the first `[TOOL_CALLS]` and after a complete call is content. The markers are special
tokens: the text must be decoded with special tokens kept.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Sequence
from typing import Any, Literal

from agentgym.parsers.base import (
    DECODE_ERRORS,
    ParseResult,
    ToolCallLike,
    ToolCallParser,
    TurnBuilder,
    decode_before,
    dumps,
    json_problem,
    line_col,
    normalize_call,
    skip_ws,
    snippet,
)

TOOL_CALLS = "[TOOL_CALLS]"
ARGS = "[ARGS]"
CALL_ID = "[CALL_ID]"
_ARG_KEYS = ("arguments", "parameters")
_NAME_END = re.compile(r"[\[{]")
_WHITESPACE = re.compile(r"\s")
_ID_ALPHABET = string.ascii_letters + string.digits
MistralStyle = Literal["array", "v11", "v13"]

_HINTS: dict[str, str] = {
    "array": 'Write the calls as [TOOL_CALLS][{"name": ..., "arguments": {...}}].',
    "v11": "Write each call as [TOOL_CALLS]name[CALL_ID]id[ARGS]{...} with the arguments as a JSON object.",
    "v13": "Write each call as [TOOL_CALLS]name[ARGS]{...} with the arguments as a JSON object.",
}


class MistralToolCallParser(ToolCallParser):
    name = "mistral"
    call_hint = _HINTS["array"]
    end_markers = ("</s>",)

    def __init__(self, style: MistralStyle = "array"):
        if style not in _HINTS:
            raise ValueError(f"unknown Mistral tool-call style {style!r}; use one of {sorted(_HINTS)}")
        self.style = style
        self.name = "mistral" if style == "array" else f"mistral_{style}"  # type: ignore[misc]
        self.call_hint = _HINTS[style]  # type: ignore[misc]

    def new_call_id(self) -> str:
        """Mistral's templates only accept ids of 9 letters or digits."""
        number = int.from_bytes(os.urandom(8), "big")  # 64 random bits cover 9 base-62 digits (~54 bits)
        digits = []
        for _ in range(9):
            number, digit = divmod(number, 62)
            digits.append(_ID_ALPHABET[digit])
        return "".join(digits)

    def _parse(self, text: str) -> ParseResult:
        turn = TurnBuilder(self)
        mark = text.find(TOOL_CALLS)
        turn.content.append(text if mark == -1 else text[:mark])
        while mark != -1:
            pos = skip_ws(text, mark + len(TOOL_CALLS))
            if text.startswith("[", pos) and not text.startswith(ARGS, pos) and not text.startswith(CALL_ID, pos):
                end = self._parse_array(text, pos, turn)
            elif text.startswith("{", pos):
                end = self._parse_object(text, pos, turn)
            else:
                end = self._parse_compact(text, mark, pos, turn)
            mark = text.find(TOOL_CALLS, end)
            turn.content.append(text[end:] if mark == -1 else text[end:mark])
        return turn.result()

    def _parse_array(self, text: str, pos: int, turn: TurnBuilder) -> int:
        """Read `[call, ...]` at `pos`; return where the text after it begins."""
        item = skip_ws(text, pos + 1)
        if text.startswith("]", item):
            turn.fail("the list after [TOOL_CALLS] is empty", text[pos : item + 1])
            return item + 1
        while True:
            try:
                value, end = decode_before(text, item, TOOL_CALLS)
            except DECODE_ERRORS:
                return _unreadable(text, item, turn)
            after = skip_ws(text, end)
            if text.startswith(",", after):
                turn.add(value, text[item:end], arg_keys=_ARG_KEYS, call_id=_given_id(value))
                item = skip_ws(text, after + 1)
                if text.startswith("]", item):  # tolerate a trailing comma
                    return item + 1
                continue
            if text.startswith("]", after) or after == len(text):  # a list cut off after a complete call is accepted
                turn.add(value, text[item:end], arg_keys=_ARG_KEYS, call_id=_given_id(value))
                return min(after + 1, len(text))
            stop = _section_end(text, after)
            line, col = line_col(text, item, after)
            turn.fail(f"expected ',' or ']' at line {line} column {col}, found {snippet(text, after)}", text[item:stop])
            return stop

    def _parse_object(self, text: str, pos: int, turn: TurnBuilder) -> int:
        try:
            value, end = decode_before(text, pos, TOOL_CALLS)
        except DECODE_ERRORS:
            return _unreadable(text, pos, turn)
        turn.add(value, text[pos:end], arg_keys=_ARG_KEYS, call_id=_given_id(value))
        return end

    def _parse_compact(self, text: str, mark: int, pos: int, turn: TurnBuilder) -> int:
        """Read `name[CALL_ID]id[ARGS]{...}` (id part optional) at `pos`, `mark` being its `[TOOL_CALLS]`."""
        name_end = _NAME_END.search(text, pos)
        if name_end is None:
            turn.fail(f"expected {ARGS} and a JSON object after the function name", text[mark:])
            return len(text)
        name = text[pos : name_end.start()].strip()
        call_id = None
        args = name_end.start()
        if text.startswith(CALL_ID, args):
            id_start = args + len(CALL_ID)
            id_end = text.find("[", id_start)
            if id_end == -1:
                turn.fail(f"expected {ARGS} after the call id", text[mark:])
                return len(text)
            call_id = text[id_start:id_end].strip() or None
            args = id_end
        if text.startswith(ARGS, args):
            args = skip_ws(text, args + len(ARGS))
        elif not text.startswith("{", args):
            stop = _section_end(text, args)
            turn.fail(f"expected {ARGS} after the function name, found {snippet(text, args)}", text[mark:stop])
            return stop
        problem = None
        try:
            value, end = decode_before(text, args, TOOL_CALLS)
        except DECODE_ERRORS:
            value, end = None, _section_end(text, args)
            problem = json_problem(text[args:end])
        if not name:
            problem = f"no function name between {TOOL_CALLS} and {ARGS}"
        elif _WHITESPACE.search(name):
            problem = f"the function name {snippet(name, 0)} contains whitespace"
        if problem is not None:
            turn.fail(problem, text[mark:end])
        else:
            turn.add({"name": name, "arguments": value}, text[mark:end], arg_keys=_ARG_KEYS, call_id=call_id)
        return end

    def format(self, calls: Sequence[ToolCallLike], content: str = "") -> str:
        normalized = [(call_id or self.new_call_id(), name, args) for call_id, name, args in map(normalize_call, calls)]
        if not normalized:
            return content
        if self.style == "array":
            items = [{"name": name, "arguments": args, "id": call_id} for call_id, name, args in normalized]
            return content + TOOL_CALLS + dumps(items)
        parts = [content]
        for call_id, name, args in normalized:
            _check_compact_name(name)
            parts.append(TOOL_CALLS + name)
            if self.style == "v11":
                if "[" in call_id or _WHITESPACE.search(call_id):
                    raise ValueError(f"call id {call_id!r} cannot be written in Mistral's v11 format (no '[' or whitespace)")
                parts.append(CALL_ID + call_id)
            parts.append(ARGS + dumps(args))
        return "".join(parts)


def _section_end(text: str, pos: int) -> int:
    """Where an unreadable call ends: at the next `[TOOL_CALLS]`, or the end of the text."""
    following = text.find(TOOL_CALLS, pos)
    return following if following != -1 else len(text)


def _unreadable(text: str, pos: int, turn: TurnBuilder) -> int:
    """Report the call at `pos` as invalid JSON; skip to the next `[TOOL_CALLS]`, since nothing after it can be trusted."""
    stop = _section_end(text, pos)
    turn.fail(json_problem(text[pos:stop]), text[pos:stop])
    return stop


def _given_id(value: Any) -> str | None:
    call_id = value.get("id") if isinstance(value, dict) else None
    return call_id if isinstance(call_id, str) and call_id else None


def _check_compact_name(name: str) -> None:
    if not name or _WHITESPACE.search(name) or "[" in name or "{" in name:
        raise ValueError(
            f"function name {name!r} cannot be written in Mistral's [TOOL_CALLS]name[ARGS] format "
            "(it must be non-empty, without whitespace, '[' or '{')"
        )
