"""Dataset rows in Parquet that read back exactly as they were written.

Arrow stores a column of dicts as one struct type: the union of every row's keys. A row that lacked a key reads
back with that key set to None, so `create_kwargs` would gain keys the row never had, and one row naming a tool in
`tools_kwargs` would make every row name it. The rule this module applies, for any Parquet file:

* Reading: inside a row, a dict key whose value is null is dropped (it is indistinguishable from a key that
  another row had), except the `content` of a chat message (a dict with `role`), which every message keeps.
  Nulls inside lists are list elements and stay.
* Writing (`write_rows_parquet`, which the environments' data commands use): the file's metadata records the
  keys that a row set to None on purpose, and reading restores exactly those. Empty dicts (`create_kwargs: {}`),
  which Parquet cannot store as a struct, are left out of the columns and recorded there too. The file stays a
  plain verl-layout Parquet file (structs, not JSON text) that verl and `datasets` read as before. After writing, the file is read
  back and compared value by value and type by type; a row that Arrow cannot store exactly (an int promoted to a
  float because another row has a float there, mixed types in one field) is an error naming the row and field,
  with JSON lines as the way out.

So a deliberate None in a nested dict survives only in files written here or as JSON lines; Parquet written by
pandas or `datasets` cannot tell it from a missing key, and the key is read as absent.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentgym.errors import ConfigError

EXPLICIT_NULLS_KEY = b"agentgym.explicit_nulls"
EMPTY_DICTS_KEY = b"agentgym.empty_dicts"

Path_ = tuple[Any, ...]  # keys and list indices from the row's top level down to a value


def _explicit_nulls(value: Any, path: Path_ = ()) -> list[Path_]:
    found: list[Path_] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if item is None:
                found.append(path + (key,))
            else:
                found.extend(_explicit_nulls(item, path + (key,)))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found.extend(_explicit_nulls(item, path + (index,)))
    return found


def _has_empty_dict(value: Any) -> bool:
    if isinstance(value, dict):
        return not value or any(_has_empty_dict(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_empty_dict(item) for item in value)
    return False


def _without_empty_dicts(value: Any, path: Path_, found: list[Path_]) -> Any:
    """`value` with every empty dict under a dict key removed (post-order, so a dict that only held empty dicts
    goes too); the removed paths are appended to `found`. Parquet cannot store a struct with no fields."""
    if isinstance(value, dict):
        kept = {}
        for key, item in value.items():
            item = _without_empty_dicts(item, path + (key,), found)
            if isinstance(item, dict) and not item:
                found.append(path + (key,))
            else:
                kept[key] = item
        return kept
    if isinstance(value, (list, tuple)):
        return [_without_empty_dicts(item, path + (index,), found) for index, item in enumerate(value)]
    return value


def _restore_empty_dicts(row: dict[str, Any], paths: list[Path_]) -> dict[str, Any]:
    for path in sorted(paths, key=len):
        node: Any = row
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = {}
    return row


def strip_merged_nulls(value: Any, keep: set[Path_] = frozenset(), path: Path_ = ()) -> Any:
    """`value` with null dict entries dropped, except the paths in `keep` and chat messages' `content`."""
    if isinstance(value, dict):
        is_message = "role" in value
        return {
            key: strip_merged_nulls(item, keep, path + (key,))
            for key, item in value.items()
            if item is not None or path + (key,) in keep or (is_message and key == "content")
        }
    if isinstance(value, list):
        return [strip_merged_nulls(item, keep, path + (index,)) for index, item in enumerate(value)]
    return value


def _difference(written: Any, read: Any, path: Path_ = ()) -> tuple[Path_, Any, Any] | None:
    """The first place where `read` is not exactly `written` (types included: 1 is not 1.0, True is not 1)."""
    if isinstance(written, tuple):
        written = list(written)
    if isinstance(written, dict) and isinstance(read, dict):
        for key in list(written) + [k for k in read if k not in written]:
            if key not in written or key not in read:
                return path + (key,), written.get(key, "<absent>"), read.get(key, "<absent>")
            found = _difference(written[key], read[key], path + (key,))
            if found:
                return found
        return None
    if isinstance(written, list) and isinstance(read, list):
        if len(written) != len(read):
            return path, written, read
        for index, (a, b) in enumerate(zip(written, read)):
            found = _difference(a, b, path + (index,))
            if found:
                return found
        return None
    if _kind(written) != _kind(read) or written != read:
        return path, written, read
    return None


def _kind(value: Any) -> Any:
    """Type up to what Arrow cannot keep apart anyway (numpy scalars read back as Python ones)."""
    if isinstance(value, (bool, numbers.Integral, numbers.Real, str, bytes)):
        return next(t for t in (bool, numbers.Integral, numbers.Real, str, bytes) if isinstance(value, t))
    return type(value)


def _dotted(path: Path_) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def write_rows_parquet(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write `rows` so that `read_rows_parquet` returns them unchanged, or raise ConfigError saying which row
    and field Parquet cannot hold."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    rows = list(rows)
    metadata: dict[bytes, bytes] = {}
    nulls = [[index, list(p)] for index, row in enumerate(rows) for p in _explicit_nulls(row)]
    metadata[EXPLICIT_NULLS_KEY] = json.dumps(nulls).encode()
    stored = rows
    if any(_has_empty_dict(row) for row in rows):
        empties: list[list[Any]] = []
        stored = []
        for index, row in enumerate(rows):
            found: list[Path_] = []
            stored.append(_without_empty_dicts(row, (), found))
            empties.extend([index, list(p)] for p in found)
        metadata[EMPTY_DICTS_KEY] = json.dumps(empties).encode()
    try:
        columns = list(dict.fromkeys(key for row in stored for key in row))  # from_pylist would see row 0's only
        table = pa.Table.from_pydict({key: [row.get(key) for row in stored] for key in columns})
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise ConfigError(f"these rows cannot share one Parquet schema ({exc}).", file=str(path),
                          fix="write the rows as JSON lines (.jsonl), which keeps every row's own types") from None
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    try:
        pq.write_table(table, path)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ConfigError(f"Parquet cannot store these rows ({exc}).", file=str(path),
                          fix="write the rows as JSON lines (.jsonl)") from None
    for index, (written, read) in enumerate(zip(rows, read_rows_parquet(path))):
        found = _difference(written, read)
        if found:
            where, before, after = found
            path.unlink()
            raise ConfigError(
                f"row {index} does not survive Parquet: `{_dotted(where)}` was {before!r} and would read back as "
                f"{after!r} (Arrow gives every row one type per field).", file=str(path),
                fix="write the rows as JSON lines (.jsonl), or give the field the same type in every row")
    return path


def read_rows_parquet(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a Parquet file with the nulls that Arrow's struct merging introduced removed (see the module's
    docstring for the rule)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    metadata = table.schema.metadata or {}
    keep: dict[int, set[Path_]] = {}
    for index, null_path in json.loads(metadata.get(EXPLICIT_NULLS_KEY, b"[]")):
        keep.setdefault(index, set()).add(tuple(null_path))
    empties: dict[int, list[Path_]] = {}
    for index, empty_path in json.loads(metadata.get(EMPTY_DICTS_KEY, b"[]")):
        empties.setdefault(index, []).append(tuple(empty_path))
    return [_restore_empty_dicts(strip_merged_nulls(row, keep.get(index, set())), empties.get(index, []))
            for index, row in enumerate(table.to_pylist())]
