"""Text the model wrote, made storable as UTF-8 without losing it.

A model can write `"\\ud800"` (plain ASCII) inside its tool-call JSON; `json.loads` turns that into a lone UTF-16
surrogate, a Python `str` that no UTF-8 encoder accepts. JSON output keeps such a character as its `\\uXXXX`
escape (valid JSON that reads back to the same string); plain text columns get the same escape as visible text.
"""

from __future__ import annotations

import json
import re
from typing import Any

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape(match: re.Match) -> str:
    return f"\\u{ord(match.group()):04x}"


def first_lone_surrogate(text: str) -> int | None:
    """Index of the first character UTF-8 cannot encode, or None when the text is storable as it is."""
    found = _LONE_SURROGATE.search(text)
    return None if found is None else found.start()


def storable_text(text: str) -> str:
    """`text` with each lone surrogate replaced by its visible `\\uXXXX` escape."""
    return _LONE_SURROGATE.sub(_escape, text)


def dumps_storable(obj: Any, **kwargs: Any) -> str:
    """`json.dumps(obj, ensure_ascii=False)` whose output always encodes as UTF-8 and `json.loads` back to `obj`.

    A lone surrogate can only sit inside a JSON string, where its `\\uXXXX` escape means the same character.
    Bytes (a VLM row's images inside `extra_info`) are written as base64 `data:` URLs, which image loaders read.
    """
    kwargs.setdefault("default", _bytes_as_data_url)
    return storable_text(json.dumps(obj, ensure_ascii=False, **kwargs))


def _bytes_as_data_url(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        import base64

        data = bytes(value)
        mime = ("image/png" if data[:8] == b"\x89PNG\r\n\x1a\n"
                else "image/jpeg" if data[:3] == b"\xff\xd8\xff" else "application/octet-stream")
        return f"data:{mime};base64," + base64.b64encode(data).decode()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
