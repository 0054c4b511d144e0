"""The XML call format of Qwen3-Coder (and Qwen3.5): parameters as tagged text, not JSON.

    <tool_call>
    <function=get_weather>
    <parameter=city>
    Zürich
    </parameter>
    </function>
    </tool_call>

A value is the text between its tags, less one newline on each side. Its type is not in the text: the tool's
JSON Schema says it (`integer` -> int, `object` -> JSON, ...), so this parser is built with the tools' schemas.
A value whose type is unknown, or that does not read as its type, stays a string; argument validation then tells
the model what was expected. Values render as the Qwen3-Coder chat template writes them (objects and arrays as
JSON, anything else with Python's `str`, so `True` and `None`), and read back through the same rule.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from agentgym.parsers.base import (
    DECODE_ERRORS,
    ParseResult,
    ToolCallLike,
    ToolCallParser,
    TurnBuilder,
    dumps,
    normalize_call,
    snippet,
)

OPEN = "<tool_call>"
CLOSE = "</tool_call>"
FUNCTION = "<function="
FUNCTION_CLOSE = "</function>"
PARAMETER = "<parameter="
PARAMETER_CLOSE = "</parameter>"
_WS = re.compile(r"\s*")
_TAG_REST = re.compile(r"([^<>\n]*)>")  # a name, then the '>' that closes its tag
_BLOCK_TAGS = re.compile("|".join(map(re.escape, (CLOSE, PARAMETER, OPEN))))

ParamTypes = Mapping[str, Mapping[str, tuple[str, ...]]]
"""tool name -> parameter name -> the JSON-Schema types it allows."""


class _Broken(Exception):
    """A call block that does not follow the format; the message says where and how."""


class Qwen3CoderToolCallParser(ToolCallParser):
    name = "qwen3_coder"
    call_hint = (
        "Write the call as <tool_call>\\n<function=NAME>\\n<parameter=ARG>\\nVALUE\\n</parameter>\\n</function>\\n</tool_call>."
    )
    end_markers = ("<|im_end|>", "<|endoftext|>")

    def __init__(self, tools: Sequence[Mapping[str, Any]] | None = None):
        self.param_types: ParamTypes = parameter_types(tools or ())

    def _parse(self, text: str) -> ParseResult:
        turn = TurnBuilder(self)
        pos = 0
        last_value_end = text.rfind(PARAMETER_CLOSE)  # bounds the searches for it: a run of unclosed values stays linear
        while True:
            start = text.find(OPEN, pos)
            if start == -1:
                turn.content.append(text[pos:])
                return turn.result()
            turn.content.append(text[pos:start])
            stop = _block_end(text, start + len(OPEN), last_value_end)
            raw = text[start:stop]
            try:
                name, arguments = self._read_block(raw)
            except _Broken as exc:
                turn.fail(str(exc), raw)
            else:
                turn.add({"name": name, "arguments": arguments}, raw, arg_keys=("arguments", "parameters"))
            pos = stop

    def _read_block(self, raw: str) -> tuple[str, dict[str, Any]]:
        end = len(raw) - len(CLOSE) if raw.endswith(CLOSE) else len(raw)
        pos = _skip(raw, len(OPEN))
        if not raw.startswith(FUNCTION, pos):
            raise _Broken(f"expected <function=NAME> after <tool_call>, found {snippet(raw, pos, end)}")
        tag = _TAG_REST.match(raw, pos + len(FUNCTION))
        if tag is None:
            raise _Broken("the <function=NAME> tag is never closed with '>'")
        name, name_end = tag.group(1).strip(), tag.end() - 1
        if not name:
            raise _Broken("the function name in <function=NAME> is empty")
        types = self.param_types.get(name, {})
        arguments: dict[str, Any] = {}
        pos = name_end + 1
        while True:
            pos = _skip(raw, pos)
            if raw.startswith(FUNCTION_CLOSE, pos):
                pos = _skip(raw, pos + len(FUNCTION_CLOSE))
                if pos < len(raw) and not raw.startswith(CLOSE, pos):
                    raise _Broken(f"unexpected text after </function>: {snippet(raw, pos, end)}")
                return name, arguments
            if pos >= len(raw) or raw.startswith(CLOSE, pos):
                raise _Broken(f"the call of {name!r} has no closing </function> tag")
            if not raw.startswith(PARAMETER, pos):
                raise _Broken(f"expected <parameter=ARG> or </function> in the call of {name!r}, found {snippet(raw, pos, end)}")
            tag = _TAG_REST.match(raw, pos + len(PARAMETER))
            if tag is None:
                raise _Broken(f"a <parameter=ARG> tag in the call of {name!r} is never closed with '>'")
            key, key_end = tag.group(1).strip(), tag.end() - 1
            if not key:
                raise _Broken(f"a parameter name in the call of {name!r} is empty")
            value_end = raw.find(PARAMETER_CLOSE, key_end + 1)
            if value_end == -1:
                raise _Broken(f"parameter {key!r} of {name!r} has no closing </parameter> tag")
            if key in arguments:
                raise _Broken(f"parameter {key!r} of {name!r} is given twice")
            arguments[key] = convert_value(_trim_newline(raw[key_end + 1 : value_end]), types.get(key, ()))
            pos = value_end + len(PARAMETER_CLOSE)

    def format(self, calls: Sequence[ToolCallLike], content: str = "") -> str:
        blocks = []
        for _, name, arguments in map(normalize_call, calls):
            params = "".join(f"{PARAMETER}{key}>\n{render_value(value)}\n{PARAMETER_CLOSE}\n" for key, value in arguments.items())
            blocks.append(f"{OPEN}\n{FUNCTION}{name}>\n{params}{FUNCTION_CLOSE}\n{CLOSE}")
        rendered = "\n".join(blocks)
        return f"{content}\n{rendered}" if content.strip() and rendered else content + rendered


def parameter_types(tools: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, tuple[str, ...]]]:
    """The JSON-Schema types of every parameter, from OpenAI tool schemas ({"type": "function", "function": ...}),
    their `function` part, or pydantic schema models."""
    found: dict[str, dict[str, tuple[str, ...]]] = {}
    for tool in tools:
        if hasattr(tool, "model_dump"):
            tool = tool.model_dump(exclude_none=True)
        function = tool.get("function", tool)
        properties = (function.get("parameters") or {}).get("properties") or {}
        found[function["name"]] = {key: _schema_types(spec) for key, spec in properties.items()}
    return found


def _schema_types(spec: Any) -> tuple[str, ...]:
    if not isinstance(spec, Mapping):
        return ()
    kind = spec.get("type")
    if isinstance(kind, str):
        return (kind,)
    if isinstance(kind, list):
        return tuple(k for k in kind if isinstance(k, str))
    for key in ("anyOf", "oneOf"):
        if isinstance(spec.get(key), list):
            return tuple(t for option in spec[key] for t in _schema_types(option))
    if "enum" in spec:
        return ("string",)
    return ()


def convert_value(text: str, types: Sequence[str]) -> Any:
    """`text` read as the first of `types` it fits; a string when none fits or the type is unknown."""
    for kind in (k for k in types if k != "string"):
        try:
            return _AS[kind](text)
        except (KeyError, *DECODE_ERRORS, SyntaxError, TypeError, MemoryError):
            continue
    return text


def _as_null(text: str) -> None:
    if text.strip() not in ("null", "None"):
        raise ValueError(text)
    return None


def _as_bool(text: str) -> bool:
    word = text.strip().lower()
    if word not in ("true", "false"):
        raise ValueError(text)
    return word == "true"


def _as_integer(text: str) -> int:
    value = json.loads(text)
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
        raise ValueError(text)
    return int(value)


def _as_number(text: str) -> int | float:
    value = json.loads(text)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(text)
    return value


def _as_container(kind: type) -> Any:
    def read(text: str) -> Any:
        try:
            value = json.loads(text)
        except DECODE_ERRORS:
            value = ast.literal_eval(text.strip())  # Python literals, as `str()` of a dict writes them
        if not isinstance(value, kind):
            raise ValueError(text)
        return value

    return read


_AS = {"null": _as_null, "boolean": _as_bool, "integer": _as_integer, "number": _as_number,
       "object": _as_container(dict), "array": _as_container(list)}


def render_value(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        return dumps(value)
    return str(value)


def _trim_newline(value: str) -> str:
    if value.startswith("\n"):
        value = value[1:]
    if value.endswith("\n"):
        value = value[:-1]
    return value


def _skip(text: str, pos: int) -> int:
    return _WS.match(text, pos).end()  # type: ignore[union-attr]


def _block_end(text: str, pos: int, last_value_end: int) -> int:
    """After the block's </tool_call>, parameter values skipped (they may hold any markup); a value never closed
    ends at the next </tool_call> before the next <tool_call>; a block never closed ends at the next <tool_call>
    outside a value, or at the end of the text."""
    while True:
        match = _BLOCK_TAGS.search(text, pos)
        if match is None:
            return len(text)
        at, tag = match.start(), match.group()
        if tag == CLOSE:
            return at + len(CLOSE)
        if tag == OPEN:
            return at
        value_end = text.find(PARAMETER_CLOSE, at) if at < last_value_end else -1
        if value_end == -1:
            following = text.find(OPEN, at)
            limit = following if following != -1 else len(text)
            close = text.find(CLOSE, at, limit)
            return close + len(CLOSE) if close != -1 else limit
        pos = value_end + len(PARAMETER_CLOSE)
