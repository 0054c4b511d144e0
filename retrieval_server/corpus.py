"""The corpus file: JSON lines in Search-R1's layout, `{"id": ..., "contents": "Title\\nText"}`.

`contents` is what gets indexed and what verl's search tool shows: its first line is the title. Lines with
`title` and `text` instead of `contents` (the other common dump layout) are joined the same way. Every other key
of a line is kept and returned with the document.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator


class CorpusError(ValueError):
    """A corpus line the server cannot index; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class Document:
    id: str
    contents: str
    raw: dict[str, Any]

    def as_result(self) -> dict[str, Any]:
        """What `/retrieve` returns for the document: the corpus line, with `id` and `contents` always set."""
        return {**self.raw, "id": self.id, "contents": self.contents}


def parse_line(line: str, *, path: str, number: int) -> Document:
    where = f"{path}, line {number}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CorpusError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}). Each line must be one "
                          'JSON object such as {"id": "1", "contents": "Title\\nText"}.') from None
    if not isinstance(obj, dict):
        raise CorpusError(f"{where}: expected a JSON object, got {type(obj).__name__}.")
    contents = obj.get("contents")
    if contents is None and isinstance(obj.get("text"), str):
        title = obj.get("title")
        contents = f"{title}\n{obj['text']}" if isinstance(title, str) and title else obj["text"]
    if not isinstance(contents, str) or not contents.strip():
        raise CorpusError(f'{where}: no text to index. Give each line a non-empty "contents" string (its first '
                          'line is the title), or "title" and "text".')
    doc_id = obj.get("id", obj.get("_id"))
    if doc_id is None:
        doc_id = str(number - 1)
    elif not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool):
        raise CorpusError(f'{where}: "id" must be a string or an integer, got {json.dumps(doc_id)[:80]}.')
    return Document(id=str(doc_id), contents=contents, raw=obj)


def read_corpus(path: str | Path) -> Iterator[Document]:
    """Documents in file order; blank lines are skipped. Raises CorpusError at the first bad line."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"corpus file {path} does not exist (give the path of a JSON-lines file).")
    with path.open("r", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield parse_line(line, path=str(path), number=number)
