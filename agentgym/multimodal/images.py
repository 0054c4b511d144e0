"""Images as verl's VLM rows hold them, turned into what the processor and the chat template need.

A row's `images` column (verl's `data.image_key`) holds, per `<image>` placeholder in the prompt, one of: raw image
bytes, a file path, a Hugging Face `datasets` Image dict (`{"bytes": ..., "path": ...}`), or a PIL image. Everything
is normalised to PNG bytes, the one form that survives Parquet, JSON-free storage and SGLang's `image_data`.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

IMAGE_PLACEHOLDER = "<image>"
_PLACEHOLDER_RE = re.compile(re.escape(IMAGE_PLACEHOLDER))


class ImageLoadError(ValueError):
    """An `images` entry that is not an image (what it was, and how to store one)."""


def load_image(value: Any, *, base_dir: str | Path | None = None) -> Image.Image:
    """An RGB PIL image from bytes, a path, a `{"bytes", "path"}` dict or a PIL image."""
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if isinstance(value, Mapping):
        if value.get("bytes") is not None:
            return load_image(value["bytes"])
        if value.get("path") is not None:
            return load_image(value["path"], base_dir=base_dir)
        if value.get("image") is not None:
            return load_image(value["image"], base_dir=base_dir)
        raise ImageLoadError(f"image entry {sorted(value)!r} has neither `bytes` nor `path`; store the image's bytes "
                             "or a file path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            with Image.open(io.BytesIO(bytes(value))) as img:
                return img.convert("RGB")
        except Exception as exc:
            raise ImageLoadError(f"{len(bytes(value))} bytes that are not a readable image ({exc}); store PNG or "
                                 "JPEG bytes") from None
    if isinstance(value, (str, Path)):
        text = str(value)
        if text.startswith("data:image/") and ";base64," in text:
            return load_image(base64.b64decode(text.split(",", 1)[1]))
        path = Path(text)
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        if not path.is_file():
            raise ImageLoadError(f"image path {text!r} is not a file; store the image's bytes or an existing path")
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except Exception as exc:
            raise ImageLoadError(f"{text!r} is not a readable image ({exc})") from None
    raise ImageLoadError(f"an image must be bytes, a path, a {{'bytes', 'path'}} dict or a PIL image; got "
                         f"{type(value).__name__}")


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def as_png(value: Any, *, base_dir: str | Path | None = None) -> bytes:
    """PNG bytes of any accepted image form (PNG bytes pass through unchanged)."""
    if isinstance(value, (bytes, bytearray)) and bytes(value[:8]) == b"\x89PNG\r\n\x1a\n":
        return bytes(value)
    return png_bytes(load_image(value, base_dir=base_dir))


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def count_placeholders(messages: Sequence[Mapping[str, Any]]) -> int:
    """`<image>` placeholders in string contents plus image parts in list contents."""
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            total += len(_PLACEHOLDER_RE.findall(content))
        elif isinstance(content, (list, tuple)):
            total += sum(1 for part in content if isinstance(part, Mapping) and part.get("type") == "image")
    return total


def with_image_parts(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Messages whose `<image>` placeholders are split into `{"type": "image"}` / `{"type": "text"}` parts (the
    form chat templates render vision tokens from); messages without placeholders are copied unchanged."""
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str) and IMAGE_PLACEHOLDER in content:
            parts: list[dict[str, Any]] = []
            for index, piece in enumerate(content.split(IMAGE_PLACEHOLDER)):
                if index:
                    parts.append({"type": "image"})
                if piece:
                    parts.append({"type": "text", "text": piece})
            out.append({**message, "content": parts})
        else:
            out.append(dict(message))
    return out


def image_entry_problem(value: Any) -> None:
    """Raise ImageLoadError unless `value` looks loadable (image header for bytes, existence for paths)."""
    if isinstance(value, Image.Image):
        return
    if isinstance(value, Mapping):
        inner = next((value.get(k) for k in ("bytes", "path", "image") if value.get(k) is not None), None)
        if inner is None:
            raise ImageLoadError(f"image entry with keys {sorted(value)!r} has neither `bytes` nor `path`")
        return image_entry_problem(inner)
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            with Image.open(io.BytesIO(bytes(value))):
                return
        except Exception:
            raise ImageLoadError(f"{len(bytes(value))} bytes that are not a readable image") from None
    if isinstance(value, (str, Path)):
        if str(value).startswith("data:image/") or Path(value).is_file():
            return
        raise ImageLoadError(f"image path {str(value)!r} is not a file")
    raise ImageLoadError(f"an image must be bytes, a path or a {{'bytes', 'path'}} dict, not {type(value).__name__}")
