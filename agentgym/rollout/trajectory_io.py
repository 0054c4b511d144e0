"""Trajectories on disk: JSONL (one object per line, for people and jq) and Parquet (for data tools and trainers).

Whatever the model wrote is storable: a lone surrogate in its text is written as its `\\uXXXX` escape.

Parquet keeps token columns as lists and the free-form parts (messages, metrics, extra_info) as JSON text, so
rows with different tools or message shapes share one schema.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from agentgym.storable_text import dumps_storable, storable_text
from agentgym.trajectory import Trajectory

_JSON_COLUMNS = ("messages", "turns", "tool_metrics", "extra_info", "row_info", "image_spans")


def write_jsonl(trajectories: Iterable[Trajectory], path: str | Path, *, append: bool = False) -> int:
    count = 0
    with open(path, "a" if append else "w", encoding="utf-8") as out:
        for traj in trajectories:
            out.write(dumps_storable(traj.to_dict()) + "\n")
            count += 1
    return count


def read_jsonl(path: str | Path) -> list[Trajectory]:
    trajectories = []
    with open(path, encoding="utf-8") as src:
        for number, line in enumerate(src, 1):
            if not line.strip():
                continue
            try:
                trajectories.append(Trajectory.from_dict(json.loads(line)))
            except (json.JSONDecodeError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: not a trajectory record ({exc})") from None
    return trajectories


def write_parquet(trajectories: Iterable[Trajectory], path: str | Path) -> int:
    rows = []
    for traj in trajectories:
        row = traj.to_dict()
        for column, value in row.items():
            if column in _JSON_COLUMNS:
                row[column] = dumps_storable(value)
            elif isinstance(value, str):
                row[column] = storable_text(value)
        rows.append(row)
    names = [f.name for f in fields(Trajectory)] + ["reward"]
    table = pa.Table.from_pylist(rows) if rows else pa.table({name: [] for name in names})
    pq.write_table(table, path)
    return len(rows)


def read_parquet(path: str | Path) -> list[Trajectory]:
    trajectories = []
    for row in pq.read_table(path).to_pylist():
        for column in _JSON_COLUMNS:
            if column in row:  # files written before a column existed
                row[column] = json.loads(row[column])
        trajectories.append(Trajectory.from_dict(row))
    return trajectories
