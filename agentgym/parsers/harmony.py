"""gpt-oss's harmony format: a turn is a run of messages, each `<|start|>assistant` + header + `<|message|>` + body
+ an end token; a call is a message addressed to a function.

    <|channel|>analysis<|message|>Need the weather.<|end|>
    <|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Oslo"}<|call|>

The generation prompt already holds the first `<|start|>assistant`. The recipient (`to=functions.NAME`) may stand
before or after the channel, as the model and the chat template write it. The content is the final and commentary
text; the analysis channel (the chain of thought) is left out, as gpt-oss's template drops it from later turns and
verl's parser removes it. A message to another recipient (a built-in `browser` or `python` tool) is an error that
names the functions namespace.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from agentgym.parsers.base import (
    DECODE_ERRORS,
    ParseResult,
    ToolCallLike,
    ToolCallParser,
    TurnBuilder,
    decode_before,
    dumps,
    json_kind,
    json_problem,
    normalize_call,
    skip_ws,
    snippet,
    trailing_text_problem,
)

START = "<|start|>"
MESSAGE = "<|message|>"
CHANNEL = "<|channel|>"
CONSTRAIN = "<|constrain|>"
ENDS = ("<|end|>", "<|call|>", "<|return|>")
_END_RE = re.compile("|".join(re.escape(e) for e in (*ENDS, START)))
_RECIPIENT = re.compile(r"\bto=(\S+?)(?=\s|<\||$)")
_CHANNEL = re.compile(re.escape(CHANNEL) + r"\s*([A-Za-z_]+)")
_NAMESPACE = "functions."


class HarmonyToolCallParser(ToolCallParser):
    name = "gpt-oss"
    call_hint = (
        "Write the call as <|start|>assistant<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>"
        '{"arg": ...}<|call|>.'
    )
    end_markers = ("<|endoftext|>",)

    def _parse(self, text: str) -> ParseResult:
        turn = TurnBuilder(self)
        pos = 0
        while pos < len(text):
            start = pos
            if text.startswith(START, pos):
                pos += len(START)
            header_end = text.find(MESSAGE, pos)
            next_start = text.find(START, pos)
            if header_end == -1 or (next_start != -1 and next_start < header_end):
                # text outside any message (a model that skipped the markup): content, as written
                stop = next_start if next_start != -1 else len(text)
                turn.content.append(_strip_markup(text[start:stop]))
                pos = stop if stop > start else len(text)
                continue
            header = text[pos:header_end]
            body_start = header_end + len(MESSAGE)
            recipient = _RECIPIENT.search(header)
            if recipient is not None:
                pos = self._call(text, start, recipient.group(1), body_start, turn)
                continue
            match = _END_RE.search(text, body_start)
            body_end = match.start() if match else len(text)
            channel = _CHANNEL.search(header)
            if not (channel and channel.group(1) == "analysis"):
                turn.content.append(text[body_start:body_end])
            pos = match.end() if match and match.group() != START else body_end
        return ParseResult("\n".join(p for p in (c.strip() for c in turn.content) if p), turn.calls, turn.errors)

    def _call(self, text: str, start: int, target: str, body_start: int, turn: TurnBuilder) -> int:
        """Read the call message whose body starts at `body_start`; return where the next message begins. The JSON is
        decoded before looking for the end token, so argument strings may hold harmony markup."""
        body = skip_ws(text, body_start)
        value: object = None
        try:
            value, end = decode_before(text, body, "<|")
        except DECODE_ERRORS:
            end = -1
        if end != -1:
            after = skip_ws(text, end)
            ending = next((e for e in ENDS if text.startswith(e, after)), None)
            if ending is not None or after == len(text) or text.startswith(START, after):
                stop = after + len(ending or "")
                self._add_call(target, value, text[start:stop], turn)
                return stop
        match = _END_RE.search(text, body_start)
        body_end = match.start() if match else len(text)
        stop = match.end() if match and match.group() != START else body_end
        doc = text[body_start:body_end]
        if not doc.strip() and end == -1:
            self._add_call(target, {}, text[start:stop], turn)
        elif end == -1:
            turn.fail(json_problem(doc.strip()), text[start:stop])
        else:
            after = skip_ws(text, end)
            turn.fail(trailing_text_problem(text, body, after, body_end), text[start:stop])
        return stop

    def _add_call(self, target: str, value: object, raw: str, turn: TurnBuilder) -> None:
        if not target.startswith(_NAMESPACE) or len(target) == len(_NAMESPACE):
            turn.fail(f"the recipient {snippet(target, 0)} is not a function; functions are addressed as "
                      f"to=functions.NAME", raw)
        elif not isinstance(value, dict):
            turn.fail(f"the arguments must be a JSON object, got {json_kind(value)}", raw)
        else:
            turn.add({"name": target[len(_NAMESPACE):], "arguments": value}, raw, arg_keys=("arguments", "parameters"))

    def format(self, calls: Sequence[ToolCallLike], content: str = "") -> str:
        """The text a gpt-oss model generates after the `<|start|>assistant` prompt: `content` as a commentary
        preamble when there are calls (a final message when not), then one message per call."""
        messages = []
        if content and calls:
            messages.append(f"{CHANNEL}commentary{MESSAGE}{content}<|end|>")
        elif content or not calls:
            messages.append(f"{CHANNEL}final{MESSAGE}{content}<|return|>")
        for _, name, arguments in map(normalize_call, calls):
            messages.append(f"{CHANNEL}commentary to={_NAMESPACE}{name} {CONSTRAIN}json{MESSAGE}{dumps(arguments)}<|call|>")
        return START.join(f"assistant{m}" if i else m for i, m in enumerate(messages))


def _strip_markup(text: str) -> str:
    if text.startswith(START):
        text = text[len(START):]
    return text.removeprefix("assistant")
