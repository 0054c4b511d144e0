"""The `<tool_call>` JSON format of Hermes, Qwen2.5 and Qwen3 models.

A turn is free text with any number of blocks `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`.
The JSON is decoded before looking for the closing tag, so argument strings may contain `</tool_call>`.
"""

from __future__ import annotations

from collections.abc import Sequence

from agentgym.parsers.base import (
    DECODE_ERRORS,
    ParseResult,
    ToolCallLike,
    ToolCallParser,
    TurnBuilder,
    decode_before,
    dumps,
    json_problem,
    normalize_call,
    skip_ws,
    trailing_text_problem,
)

OPEN = "<tool_call>"
CLOSE = "</tool_call>"
_ARG_KEYS = ("arguments", "parameters")


class HermesToolCallParser(ToolCallParser):
    name = "hermes"
    call_hint = 'Write the call as <tool_call>{"name": ..., "arguments": {...}}</tool_call>.'
    end_markers = ("<|im_end|>", "<|endoftext|>")

    def _parse(self, text: str) -> ParseResult:
        turn = TurnBuilder(self)
        pos = 0
        while True:
            start = text.find(OPEN, pos)
            if start == -1:
                turn.content.append(text[pos:])
                return turn.result()
            turn.content.append(text[pos:start])
            pos = self._parse_block(text, start, turn)

    def _parse_block(self, text: str, start: int, turn: TurnBuilder) -> int:
        """Read the block opening at `start`; return where the text after it begins."""
        body = skip_ws(text, start + len(OPEN))
        try:
            value, end = decode_before(text, body, OPEN)
        except DECODE_ERRORS:
            return self._broken_block(text, start, body, turn)
        after = skip_ws(text, end)
        if text.startswith(CLOSE, after):
            stop = after + len(CLOSE)
        elif after == len(text) or text.startswith(OPEN, after):
            stop = after  # a complete call whose closing tag is missing: nothing is ambiguous
        else:
            stop, closed = _block_end(text, after)
            turn.fail(trailing_text_problem(text, body, after, stop - len(CLOSE) if closed else stop), text[start:stop])
            return stop
        turn.add(value, text[start:stop], arg_keys=_ARG_KEYS)
        return stop

    def _broken_block(self, text: str, start: int, body: int, turn: TurnBuilder) -> int:
        stop, closed = _block_end(text, body)
        doc = text[body : stop - len(CLOSE)] if closed else text[body:stop]
        problem = json_problem(doc) if doc.strip() else "the <tool_call> block is empty"
        if not closed:
            problem += ", and the closing </tool_call> tag is missing"
        turn.fail(problem, text[start:stop])
        return stop

    def format(self, calls: Sequence[ToolCallLike], content: str = "") -> str:
        blocks = []
        for _, name, arguments in map(normalize_call, calls):
            blocks.append(f'{OPEN}\n{{"name": {dumps(name)}, "arguments": {dumps(arguments)}}}\n{CLOSE}')
        rendered = "\n".join(blocks)
        return f"{content}\n{rendered}" if content and rendered else content + rendered


def _block_end(text: str, pos: int) -> tuple[int, bool]:
    """End of a block whose JSON could not be trusted: after its closing tag, or, when it is never closed, at the
    next opening tag or the end of the text. Second item: whether it was closed. The search for the closing tag
    stops at the next opening tag, which keeps a run of unclosed tags linear."""
    following = text.find(OPEN, pos)
    limit = following if following != -1 else len(text)
    close = text.find(CLOSE, pos, limit)
    if close != -1:
        return close + len(CLOSE), True
    return limit, False
