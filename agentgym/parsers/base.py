"""What every tool-call format shares: the result records, the parser interface, and the checks that turn one
decoded JSON value into a call, or into a message that tells the model what to fix.

Parsers never raise on model output: whatever the model wrote ends up as content, a call, or a `ParseError`
whose message is meant to be shown to the model as that call's tool message.
"""

from __future__ import annotations

import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

from agentgym.tools.schemas import (
    OpenAIFunctionCallSchema,
    OpenAIFunctionParsedSchema,
    OpenAIFunctionToolCall,
)

_DECODER = json.JSONDecoder()
_JSON_WS = re.compile(r"[ \t\n\r]*")
# A JSON string (unrolled loop: linear, no backtracking blow-up) or one bracket.
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
DECODE_ERRORS = (ValueError, RecursionError)


@dataclass(frozen=True, slots=True)
class ParsedToolCall:
    """One call the model wrote, decoded.

    `index` is the call's 1-based position among the turn's call attempts, numbered together with
    `ParseError.index`, so tool results and error messages can be put back in the order the model wrote them.
    `raw` is the exact text of the call, markup included.
    """

    name: str
    arguments: dict[str, Any]
    id: str
    raw: str
    index: int

    def arguments_json(self) -> str:
        return json.dumps(self.arguments, ensure_ascii=False)

    def to_openai(self) -> OpenAIFunctionToolCall:
        return OpenAIFunctionToolCall(id=self.id, function=OpenAIFunctionCallSchema(name=self.name, arguments=self.arguments))


@dataclass(frozen=True, slots=True)
class ParseError:
    """A call attempt that could not be decoded.

    `message` is written for the model (it becomes the tool message of this attempt): which call, what was
    wrong, and how the format expects the call to be written.
    """

    index: int
    message: str
    raw: str


@dataclass(slots=True)
class ParseResult:
    """One assistant turn split into its text (`content`, markup removed, whitespace-stripped) and its calls."""

    content: str
    calls: list[ParsedToolCall] = field(default_factory=list)
    errors: list[ParseError] = field(default_factory=list)

    @property
    def has_call_attempts(self) -> bool:
        """The model tried to call a tool, successfully or not: the episode should go on with tool messages."""
        return bool(self.calls or self.errors)


ToolCallLike = Union[
    ParsedToolCall, OpenAIFunctionToolCall, OpenAIFunctionCallSchema, OpenAIFunctionParsedSchema, Mapping[str, Any]
]


class ToolCallParser(ABC):
    """Reads tool calls out of one model turn in a model family's format, and writes calls in that format."""

    name: ClassVar[str]
    call_hint: ClassVar[str]
    """Closes every error message: how the model should write a call in this format."""
    end_markers: ClassVar[tuple[str, ...]] = ()
    """End-of-turn tokens tolerated (and dropped) at the very end of the text, for callers that keep them."""

    def parse(self, text: str) -> ParseResult:
        """Split `text` (one assistant turn, special tokens kept) into content, calls and errors. Never raises."""
        stripped = text.rstrip()
        for marker in self.end_markers:
            if stripped.endswith(marker):
                text = stripped[: -len(marker)]
                break
        return self._parse(text)

    @abstractmethod
    def _parse(self, text: str) -> ParseResult: ...

    @abstractmethod
    def format(self, calls: Sequence[ToolCallLike], content: str = "") -> str:
        """Render `content` followed by `calls` the way the model family writes them (for SFT transcripts).

        Raises ValueError for a call that this format cannot express (e.g. arguments that are not an object).
        """

    def new_call_id(self) -> str:
        return "call_" + os.urandom(12).hex()


class TurnBuilder:
    """Collects one turn's content pieces, calls and errors, numbering call attempts in the order they appear."""

    __slots__ = ("_parser", "content", "calls", "errors")

    def __init__(self, parser: ToolCallParser):
        self._parser = parser
        self.content: list[str] = []
        self.calls: list[ParsedToolCall] = []
        self.errors: list[ParseError] = []

    def _next_index(self) -> int:
        return len(self.calls) + len(self.errors) + 1

    def add(self, value: Any, raw: str, *, arg_keys: tuple[str, str], call_id: str | None = None) -> None:
        """Record `value` (a decoded call object) as a call, or as an error saying what is wrong with it."""
        checked = check_call_object(value, arg_keys)
        if isinstance(checked, str):
            self.fail(checked, raw)
            return
        name, arguments = checked
        self.calls.append(ParsedToolCall(name, arguments, call_id or self._parser.new_call_id(), raw, self._next_index()))

    def fail(self, problem: str, raw: str) -> None:
        index = self._next_index()
        message = f"Tool call {index} could not be parsed: {problem}. {self._parser.call_hint}"
        self.errors.append(ParseError(index, message, raw))

    def result(self) -> ParseResult:
        return ParseResult("".join(self.content).strip(), self.calls, self.errors)


def skip_ws(text: str, pos: int) -> int:
    return _JSON_WS.match(text, pos).end()  # type: ignore[union-attr]  # matches the empty string at worst


def decode_at(text: str, pos: int) -> tuple[Any, int]:
    """Decode the JSON value starting at `pos`; raises one of DECODE_ERRORS."""
    return _DECODER.raw_decode(text, pos)


def decode_before(text: str, pos: int, marker: str) -> tuple[Any, int]:
    """`decode_at(text, pos)`, computed inside a window that ends at the next `marker`.

    The window grows (geometrically) only when the value runs past its end, e.g. a string holding the marker.
    The result is the same as decoding the whole text, but a failure costs time in proportion to the window:
    `json` locates every error by counting lines from the start of the document, which made a long run of
    broken calls (a degenerate, repeating generation) quadratic.
    """
    limit = text.find(marker, pos)
    while True:
        window = text[pos:] if limit == -1 else text[pos:limit]
        try:
            value, end = _DECODER.raw_decode(window)
        except json.JSONDecodeError as exc:
            # An error this close to the cut may come from the cut itself (json checks escapes a few characters ahead).
            maybe_cut = exc.msg.startswith("Unterminated string") or exc.pos >= len(window.rstrip()) - 16
            if limit == -1 or not maybe_cut:
                raise
            limit = text.find(marker, max(limit + 1, pos + 2 * (limit - pos)))
            continue
        return value, pos + end


def dumps(value: Any) -> str:
    """JSON as chat templates' `tojson` writes it: non-ASCII kept, default separators."""
    return json.dumps(value, ensure_ascii=False)


def line_col(text: str, start: int, pos: int) -> tuple[int, int]:
    """1-based line and column of `pos`, counted from `start`."""
    line = text.count("\n", start, pos) + 1
    newline = text.rfind("\n", start, pos)
    return line, pos - (newline + 1 if newline != -1 else start) + 1


def snippet(text: str, pos: int, end: int | None = None, limit: int = 30) -> str:
    """Up to `limit` characters of `text[pos:end]`, quoted, for an error message."""
    end = len(text) if end is None else end
    piece = text[pos : min(end, pos + limit)]
    return dumps(piece + "..." if end - pos > limit else piece)


def trailing_text_problem(text: str, start: int, pos: int, end: int | None = None) -> str:
    """Text follows a complete JSON value (that began at `start`) where the format allows none."""
    line, col = line_col(text, start, pos)
    return f"unexpected text after the JSON object at line {line} column {col}: {snippet(text, pos, end)}"


def json_problem(doc: str) -> str:
    """Why `doc` (JSON text that failed to decode) is not a JSON value; positions count from its start."""
    try:
        _, end = _DECODER.raw_decode(doc)
    except json.JSONDecodeError as exc:
        return f"invalid JSON at line {exc.lineno} column {exc.colno} ({_json_reason(exc)})"
    except RecursionError:
        return "invalid JSON (nested too deeply)"
    except ValueError as exc:
        if "integer string conversion" in str(exc):
            return "invalid JSON (a number has more than 4300 digits)"
        return f"invalid JSON ({exc})"
    return trailing_text_problem(doc, 0, skip_ws(doc, end))


def _json_reason(exc: json.JSONDecodeError) -> str:
    msg = exc.msg
    if msg.startswith("Unterminated string"):
        return "a string is never closed"
    if exc.pos >= len(exc.doc.rstrip()):
        return "the JSON ends before the value is complete"
    if msg == "Expecting value":
        return "expected a value"
    if msg == "Expecting property name enclosed in double quotes":
        return "expected a property name in double quotes"
    if msg == "Expecting ':' delimiter":
        return "expected ':' after the property name"
    if msg == "Expecting ',' delimiter":
        return "expected ',' or '}'" if _innermost_bracket(exc.doc, exc.pos) == "{" else "expected ',' or ']'"
    if msg.startswith("Invalid control character"):
        return "a string contains a raw control character; escape it, e.g. \\n"
    if msg.startswith("Invalid \\"):
        return "invalid escape sequence in a string"
    return msg[:1].lower() + msg[1:]


def _innermost_bracket(doc: str, end: int) -> str:
    stack: list[str] = []
    for match in _JSON_TOKEN.finditer(doc, 0, end):
        token = match.group()
        if token == "{" or token == "[":
            stack.append(token)
        elif (token == "}" or token == "]") and stack:
            stack.pop()
    return stack[-1] if stack else ""


def json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def check_call_object(value: Any, arg_keys: tuple[str, str]) -> tuple[str, dict[str, Any]] | str:
    """`(name, arguments)` from a decoded call object, or the problem with it.

    `arg_keys` is (the format's key for arguments, the other spelling models also use). Missing or null
    arguments mean a call without arguments; arguments given as a string holding a JSON object are decoded.
    """
    primary, alternate = arg_keys
    if not isinstance(value, dict):
        return f"expected a JSON object, got {json_kind(value)}"
    if "name" not in value:
        return 'the object has no "name" field'
    name = value["name"]
    if not isinstance(name, str) or not name.strip():
        return f'"name" must be a non-empty string, got {snippet(name, 0) if isinstance(name, str) else json_kind(name)}'
    if primary in value and alternate in value:
        return f'both "{primary}" and "{alternate}" are given; use only "{primary}"'
    key = alternate if alternate in value else primary
    arguments = value.get(key)
    if arguments is None:
        return name, {}
    if isinstance(arguments, str):
        if not arguments.strip():
            return name, {}
        try:
            arguments = json.loads(arguments)
        except DECODE_ERRORS:
            return f'"{key}" is a string that is not valid JSON; give the arguments as a JSON object'
        if not isinstance(arguments, dict):
            return f'"{key}" must be a JSON object, got a string holding {json_kind(arguments)}'
    elif not isinstance(arguments, dict):
        return f'"{key}" must be a JSON object, got {json_kind(arguments)}'
    return name, arguments


def normalize_call(call: ToolCallLike) -> tuple[str | None, str, dict[str, Any]]:
    """`(id or None, name, arguments)` of a call given in any of the shapes `format` accepts."""
    if isinstance(call, ParsedToolCall):
        return call.id, call.name, call.arguments
    if isinstance(call, OpenAIFunctionToolCall):
        return call.id, call.function.name, call.function.arguments
    if isinstance(call, OpenAIFunctionCallSchema):
        return None, call.name, call.arguments
    if isinstance(call, OpenAIFunctionParsedSchema):
        return None, call.name, _arguments_from_string(call.name, call.arguments)
    if isinstance(call, Mapping):
        function = call.get("function", call)
        name = function.get("name") if isinstance(function, Mapping) else None
        if not isinstance(name, str) or not name:
            raise ValueError(f"tool call {call!r} has no name; give it as {{'function': {{'name': ..., 'arguments': ...}}}}")
        arguments = function.get("arguments") or {}
        if isinstance(arguments, str):
            arguments = _arguments_from_string(name, arguments)
        if not isinstance(arguments, Mapping):
            raise ValueError(f"arguments of tool call {name!r} must be a JSON object, got {type(arguments).__name__}")
        call_id = call.get("id")
        return (call_id if isinstance(call_id, str) and call_id else None), name, dict(arguments)
    raise TypeError(
        f"cannot format a tool call of type {type(call).__name__}; pass a ParsedToolCall, an "
        "OpenAIFunctionToolCall or an OpenAI-style dict {'id': ..., 'function': {'name': ..., 'arguments': ...}}"
    )


def _arguments_from_string(name: str, arguments: str) -> dict[str, Any]:
    if not arguments.strip():
        return {}
    try:
        decoded = json.loads(arguments)
    except DECODE_ERRORS as exc:
        raise ValueError(f"arguments of tool call {name!r} are not valid JSON: {exc}") from exc
    if not isinstance(decoded, dict):
        raise ValueError(f"arguments of tool call {name!r} must be a JSON object, got {json_kind(decoded)}")
    return decoded
