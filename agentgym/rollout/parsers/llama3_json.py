"""The JSON tool calls of Llama 3.1/3.2/3.3: `{"name": ..., "parameters": {...}}`, several separated by `;`.

The chat template writes calls as the whole turn; models may also put `<|python_tag|>` in front, after some text.
Without the tag, a turn counts as calls only if it starts with `{` and the object looks like a call (has a
"name", "parameters" or "arguments" key), so a plain JSON answer stays content.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentgym.rollout.parsers.base import (
    DECODE_ERRORS,
    ParseResult,
    ToolCallLike,
    ToolCallParser,
    TurnBuilder,
    decode_at,
    dumps,
    json_problem,
    normalize_call,
    skip_ws,
)

PYTHON_TAG = "<|python_tag|>"
_ARG_KEYS = ("parameters", "arguments")
_CALL_KEYS = ("name",) + _ARG_KEYS


class Llama3JsonToolCallParser(ToolCallParser):
    name = "llama3_json"
    call_hint = 'Write each call as {"name": ..., "parameters": {...}} and separate several calls with a semicolon.'
    end_markers = ("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>")

    def _parse(self, text: str) -> ParseResult:
        turn = TurnBuilder(self)
        tag = text.find(PYTHON_TAG)
        if tag != -1:
            turn.content.append(text[:tag])
            self._parse_calls(text, skip_ws(text, tag + len(PYTHON_TAG)), turn, tagged=True)
        else:
            start = skip_ws(text, 0)
            if text.startswith("{", start):
                self._parse_calls(text, start, turn, tagged=False)
            else:
                turn.content.append(text)
        return turn.result()

    def _parse_calls(self, text: str, pos: int, turn: TurnBuilder, *, tagged: bool) -> None:
        first = True
        while True:
            try:
                value, end = decode_at(text, pos)
            except DECODE_ERRORS:
                if first and not tagged and '"name"' not in text:
                    turn.content.append(text)
                else:
                    turn.fail(json_problem(text[pos:]), text[pos:])
                return
            if first and not tagged and not _looks_like_call(value):
                turn.content.append(text)
                return
            first = False
            turn.add(value, text[pos:end], arg_keys=_ARG_KEYS)
            after = skip_ws(text, end)
            if not text.startswith(";", after):
                turn.content.append(text[after:])
                return
            pos = skip_ws(text, after + 1)
            if pos == len(text):
                return

    def format(self, calls: Sequence[ToolCallLike], content: str = "") -> str:
        rendered = "; ".join(
            f'{{"name": {dumps(name)}, "parameters": {dumps(arguments)}}}' for _, name, arguments in map(normalize_call, calls)
        )
        if content and rendered:
            return content + PYTHON_TAG + rendered
        return content + rendered


def _looks_like_call(value: Any) -> bool:
    return isinstance(value, dict) and any(key in value for key in _CALL_KEYS)
