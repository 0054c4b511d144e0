"""The JSON tool calls of Llama 3.1/3.2/3.3: `{"name": ..., "parameters": {...}}`, several separated by `;`.

The chat template writes calls as the whole turn; models may also put `<|python_tag|>` in front, after some text.
A turn that starts with `{` is read as calls if its first object looks like a call (has a "name", "parameters"
or "arguments" key, or is broken JSON mentioning "name"), so a plain JSON answer stays content; otherwise the
calls are whatever follows the first `<|python_tag|>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentgym.parsers.base import (
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
    snippet,
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
        start = skip_ws(text, 0)
        if text.startswith("{", start) and self._parse_calls(text, start, turn, tagged=False):
            return turn.result()
        tag = text.find(PYTHON_TAG)
        if tag == -1:
            turn.content.append(text)
        else:
            turn.content.append(text[:tag])
            start = skip_ws(text, tag + len(PYTHON_TAG))
            if text.startswith("{", start):
                self._parse_calls(text, start, turn, tagged=True)
            elif start == len(text):
                turn.fail(f"nothing follows {PYTHON_TAG}", text[tag:])
            else:
                turn.fail(f"expected a JSON object after {PYTHON_TAG}, found {snippet(text, start)}", text[tag:])
        return turn.result()

    def _parse_calls(self, text: str, pos: int, turn: TurnBuilder, *, tagged: bool) -> bool:
        """Read `call; call; ...` from `pos`. Untagged text that turns out not to be a call attempt is left
        alone (returns False)."""
        first = True
        while True:
            try:
                value, end = decode_at(text, pos)
            except DECODE_ERRORS:
                if first and not tagged and '"name"' not in text:
                    return False
                turn.fail(json_problem(text[pos:]), text[pos:])
                return True
            if first and not tagged and not _looks_like_call(value):
                return False
            first = False
            turn.add(value, text[pos:end], arg_keys=_ARG_KEYS)
            after = skip_ws(text, end)
            if not text.startswith(";", after):
                turn.content.append(text[after:])
                return True
            pos = skip_ws(text, after + 1)
            if pos == len(text):
                return True

    def format(self, calls: Sequence[ToolCallLike], content: str = "") -> str:
        rendered = "; ".join(
            f'{{"name": {dumps(name)}, "parameters": {dumps(arguments)}}}' for _, name, arguments in map(normalize_call, calls)
        )
        if content and rendered:
            return content + PYTHON_TAG + rendered
        return content + rendered


def _looks_like_call(value: Any) -> bool:
    return isinstance(value, dict) and any(key in value for key in _CALL_KEYS)
