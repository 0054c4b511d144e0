"""Prompt rows for the rollout side: reading dataset files and a resumable, seeded batch iterator."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentgym.errors import ConfigError


def read_rows(files: str | Sequence[str] | None, *, prompt_key: str = "prompt",
              check_prompts: bool = True) -> list[dict[str, Any]]:
    """verl-style dataset rows from parquet or JSON-lines files (in the order given).

    The chat messages are read from `prompt_key` (verl's `data.prompt_key`) and stored under `prompt`, the key the
    agent loop reads; a row without them, or with something other than a list of role/content messages, stops
    the run with the file and row named, before any rollout starts. `check_prompts=False` leaves that to the
    caller's data check (`agentgym.rows.check`), which names every bad row at once. Parquet rows come back as
    they were written: nulls that Arrow's struct merging added are dropped (`agentgym.rows.parquet` gives the rule).
    """
    if files is None:
        return []
    paths = [files] if isinstance(files, str) else list(files)
    rows: list[dict[str, Any]] = []
    for raw in paths:
        path = Path(raw).expanduser()
        found = read_records(path)
        if check_prompts:
            rows.extend(_with_prompt(row, prompt_key, path, index) for index, row in enumerate(found))
        else:
            rows.extend(row if prompt_key == "prompt" or not isinstance(row, dict) or prompt_key not in row
                        else {**row, "prompt": row[prompt_key]} for row in found)
    return rows


def read_records(path: str | Path) -> list[Any]:
    """The rows of one .parquet or .jsonl file, as they are (no row checks: `agentgym data validate` names bad
    rows); a damaged or truncated file is named with its line or row group and the fix."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"dataset file {path} does not exist.", entry="data.train_files",
                          fix="point data.train_files at a .parquet or .jsonl file")
    if path.suffix == ".parquet":
        import pyarrow as pa

        from agentgym.rows.parquet import read_rows_parquet

        try:
            return read_rows_parquet(path)
        except (pa.ArrowException, OSError):
            _read_parquet(path)  # names the damaged footer or row group and the fix
            raise
    if path.suffix in (".jsonl", ".json"):
        return _read_jsonl(path)
    raise ConfigError(f"cannot read dataset file {path}: unknown extension '{path.suffix}'.",
                      entry="data.train_files", fix="use .parquet or .jsonl")


_REGENERATE = "regenerate or re-copy the file (a run or copy that was cut short leaves it truncated)"


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    """Rows of a parquet file, read row group by row group so that a damaged one is named."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise ConfigError(f"dataset file {path} is not a readable parquet file ({exc}); its footer is missing or "
                          f"damaged, which is what a truncated file looks like.", entry="data.train_files",
                          fix=_REGENERATE) from None
    rows: list[dict[str, Any]] = []
    for group in range(handle.num_row_groups):
        try:
            rows.extend(handle.read_row_group(group).to_pylist())
        except (pa.ArrowException, OSError) as exc:
            raise ConfigError(f"dataset file {path}: row group {group} of {handle.num_row_groups} (rows from "
                              f"{len(rows)} on) cannot be read ({exc}).", entry="data.train_files",
                              fix=_REGENERATE) from None
    return rows


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """One JSON object per line; a bad line is named by its real number in the file."""
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as f:
        lines = f.readlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            cut = number == len(lines) and not line.endswith("\n")
            why = " It is the last line and has no line end: the file looks truncated." if cut else ""
            raise ConfigError(f"dataset file {path}, line {number}, column {exc.colno}: not valid JSON "
                              f"({exc.msg}).{why}", entry="data.train_files",
                              fix=_REGENERATE if cut else "fix that line: each line must be one JSON object") from None
        if not isinstance(row, dict):
            raise ConfigError(f"dataset file {path}, line {number}: a row must be a JSON object, got "
                              f"{type(row).__name__}.", entry="data.train_files",
                              fix="write one JSON object per line (JSON Lines)")
        rows.append(row)
    return rows


def _with_prompt(row: dict[str, Any], prompt_key: str, path: Path, index: int) -> dict[str, Any]:
    if prompt_key not in row:
        raise ConfigError(f"row {index} of {path} has no '{prompt_key}' column (it has: {', '.join(sorted(row))}).",
                          entry="data.prompt_key", fix="set data.prompt_key to the column that holds the chat messages")
    messages = row[prompt_key]
    if not (isinstance(messages, list) and messages
            and all(isinstance(m, dict) and "role" in m and "content" in m for m in messages)):
        raise ConfigError(f"row {index} of {path}: '{prompt_key}' must be a non-empty list of chat messages "
                          f"({{'role': ..., 'content': ...}}); got {str(messages)[:120]!r}.", entry="data.prompt_key",
                          fix="store each prompt as a list of messages, e.g. [{'role': 'user', 'content': 'What is 2+2?'}]")
    return row if prompt_key == "prompt" else {**row, "prompt": messages}


class PromptBatches:
    """Endless epochs over `rows` in batches of `batch_size`, reshuffled each epoch with `seed + epoch`.

    Its whole state is (epoch, position, carry), so a checkpoint restores exactly the next batch. A trailing
    partial batch is dropped (GRPO needs whole batches of groups). `carry`: row indices served before the epoch's
    order goes on (an overlapped run's checkpoint puts there the rows its collections in flight had drawn, so a
    resumed run trains them instead of skipping them).
    """

    def __init__(self, rows: Sequence[dict[str, Any]], batch_size: int, *, shuffle: bool = True, seed: int = 1):
        if len(rows) < batch_size:
            raise ConfigError(f"the dataset has {len(rows)} rows, fewer than data.train_batch_size={batch_size}.",
                              entry="data.train_batch_size", fix="lower data.train_batch_size or add rows")
        self.rows = list(rows)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.position = 0
        self.carry: list[int] = []

    @property
    def batches_per_epoch(self) -> int:
        return len(self.rows) // self.batch_size

    def _order(self) -> list[int]:
        order = list(range(len(self.rows)))
        if self.shuffle:
            random.Random(self.seed + self.epoch).shuffle(order)
        return order

    def next_indices(self) -> list[int]:
        """The next batch as indices into `rows`: the carried ones first, then the epoch's order."""
        batch, self.carry = self.carry[: self.batch_size], self.carry[self.batch_size:]
        need = self.batch_size - len(batch)
        if need:
            if self.position + need > len(self.rows):
                self.epoch += 1
                self.position = 0
            batch += self._order()[self.position : self.position + need]
            self.position += need
        return batch

    def next_batch(self) -> list[dict[str, Any]]:
        return [self.rows[i] for i in self.next_indices()]

    def state_dict(self, carry: Sequence[int] = ()) -> dict[str, Any]:
        """The position; `carry`: indices to serve before the rows still carried (the rows in flight)."""
        state: dict[str, Any] = {"epoch": self.epoch, "position": self.position}
        if carry or self.carry:
            state["carry"] = [*carry, *self.carry]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.carry = [int(i) for i in state.get("carry", [])]
