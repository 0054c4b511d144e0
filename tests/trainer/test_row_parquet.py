"""Parquet rows round-trip exactly: Arrow's struct merging must not hand one row's keys (as None) to another.

Each writer verl users meet is covered: our data commands, pyarrow directly, pandas and `datasets` (the last two
when installed; they are in the `dev` extras).
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agentgym.episode.session import Session
from agentgym.errors import ConfigError
from agentgym.interactions.base import BaseInteraction
from agentgym.rows.parquet import read_rows_parquet, write_rows_parquet
from agentgym.tools.base_tool import BaseTool
from agentgym.tools.schemas import OpenAIFunctionToolSchema, ToolResponse
from agentgym.rows import read_rows
from agentgym_envs.data_cli import write_rows


def _row(index: int, create_kwargs: dict, *, tools: dict | None = None, interaction: dict | None = None) -> dict:
    return {
        "data_source": "test/sql",
        "prompt": [{"role": "user", "content": f"question {index}"}],
        "extra_info": {
            "index": index,
            "tools_kwargs": tools if tools is not None else {"sql": {"create_kwargs": create_kwargs}},
            "interaction_kwargs": interaction or {"name": "teacher", "answer": str(index)},
        },
    }


ROWS = [
    _row(0, {"table": {"name": ["ann", "bob"], "age": [31, 42]}}),
    _row(1, {"table": {"city": ["oslo"]}, "dialect": "sqlite"}),
    _row(2, {}, tools={"sql": {"create_kwargs": {"table": {"id": [7]}}}, "search": {"create_kwargs": {"k": 3}}},
         interaction={"name": "teacher", "answer": "2", "hint": "count rows"}),
]


def _schema(name: str) -> OpenAIFunctionToolSchema:
    return OpenAIFunctionToolSchema.model_validate(
        {"type": "function", "function": {"name": name, "description": name,
                                          "parameters": {"type": "object", "properties": {}}}})


class TableTool(BaseTool):
    """Takes exactly the keyword arguments a row may give it, as a verl tool written for these rows would."""

    def __init__(self) -> None:
        super().__init__({}, _schema("sql"))
        self.received: list[dict[str, Any]] = []

    async def create(self, instance_id=None, *, table: dict[str, list], dialect: str = "ansi"):
        self.received.append({"table": table, "dialect": dialect})
        return instance_id, ToolResponse()

    async def execute(self, instance_id, parameters, **kwargs):
        return ToolResponse(text=str(sorted(self.received[-1]["table"]))), 0.0, {}


class Teacher(BaseInteraction):
    def __init__(self) -> None:
        super().__init__({"name": "teacher"})
        self.started: list[dict[str, Any]] = []

    async def start_interaction(self, instance_id=None, **kwargs):
        self.started.append(kwargs)
        return instance_id


async def _run_rows(rows: list[dict]) -> tuple[TableTool, Teacher]:
    """Each row through a real Session, the way the agent loop uses it: start, one `sql` call, close."""
    tool, teacher = TableTool(), Teacher()
    for row in rows:
        async with Session({"sql": tool, "search": tool}, extra_info=row["extra_info"],
                           interactions={"teacher": teacher}) as session:
            [result] = await session.run_calls([type("Call", (), {"name": "sql", "arguments": {}, "id": "c"})()])
            assert result.error is None, result.error
    return tool, teacher


def _expected_create(row: dict) -> dict:
    kwargs = row["extra_info"]["tools_kwargs"]["sql"]["create_kwargs"]
    return {"table": kwargs["table"], "dialect": kwargs.get("dialect", "ansi")}


def test_merged_structs_really_add_none_keys_in_plain_pyarrow(tmp_path):
    """The trap itself: what Arrow gives back without our reader."""
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    raw = pq.read_table(path).to_pylist()
    assert raw[0]["extra_info"]["tools_kwargs"]["sql"]["create_kwargs"]["table"]["city"] is None
    assert raw[0]["extra_info"]["tools_kwargs"]["search"] is None


def test_rows_written_by_our_data_command_reach_create_and_interaction_unchanged(tmp_path):
    path = write_rows(ROWS, tmp_path / "rows.parquet")
    rows = read_rows(str(path))
    assert rows == ROWS
    tool, teacher = __import__("asyncio").run(_run_rows(rows))
    assert tool.received == [_expected_create(r) for r in ROWS]
    assert teacher.started == [r["extra_info"]["interaction_kwargs"] for r in ROWS]  # verl passes `name` too


def _write_pyarrow(rows: list[dict], path) -> None:
    pq.write_table(pa.Table.from_pylist(rows), path)


def _write_pandas(rows: list[dict], path) -> None:
    pd = pytest.importorskip("pandas")
    pd.DataFrame(rows).to_parquet(path)


def _write_datasets(rows: list[dict], path) -> None:
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(rows).to_parquet(str(path))


@pytest.mark.parametrize("writer", [_write_pyarrow, _write_pandas, _write_datasets])
def test_rows_written_by_other_tools_lose_the_merged_nones(tmp_path, writer):
    path = tmp_path / "rows.parquet"
    writer(ROWS, path)
    rows = read_rows(str(path))
    assert [r["extra_info"] for r in rows] == [r["extra_info"] for r in ROWS]
    tool, teacher = __import__("asyncio").run(_run_rows(rows))
    assert tool.received == [_expected_create(r) for r in ROWS]
    assert teacher.started[0] == ROWS[0]["extra_info"]["interaction_kwargs"]


def test_one_row_naming_an_unregistered_tool_fails_only_that_row(tmp_path):
    rows = [_row(0, {"table": {"a": [1]}}), _row(1, {"table": {"a": [2]}}, tools={
        "sql": {"create_kwargs": {"table": {"a": [2]}}}, "browser": {"create_kwargs": {"url": "x"}}})]
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    read = read_rows(str(path))
    Session({"sql": TableTool()}, extra_info=read[0]["extra_info"], interactions={"teacher": Teacher()})  # no `browser`
    with pytest.raises(ValueError, match="browser"):
        Session({"sql": TableTool()}, extra_info=read[1]["extra_info"], interactions={"teacher": Teacher()})


def test_explicit_none_survives_our_writer_and_is_documented_lost_elsewhere(tmp_path):
    rows = [_row(0, {"table": {"a": [1]}, "dialect": None}), _row(1, {"table": {"b": [2]}})]
    ours = write_rows_parquet(rows, tmp_path / "ours.parquet")
    assert read_rows_parquet(ours) == rows
    theirs = tmp_path / "theirs.parquet"
    _write_pyarrow(rows, theirs)
    assert "dialect" not in read_rows_parquet(theirs)[0]["extra_info"]["tools_kwargs"]["sql"]["create_kwargs"]


def test_chat_messages_keep_a_null_content(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": "hi"},
                        {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f"}}]}]},
            {"prompt": [{"role": "user", "content": "yo"}]}]
    path = tmp_path / "theirs.parquet"
    _write_pyarrow(rows, path)
    assert read_rows_parquet(path) == rows


def test_empty_kwargs_dicts_round_trip(tmp_path):
    rows = [_row(i, {}, tools={"calc": {"create_kwargs": {}}}) for i in range(2)]
    rows.append(_row(2, {}, tools={"calc": {"create_kwargs": {"precision": 3}}}))
    path = write_rows_parquet(rows, tmp_path / "rows.parquet")
    assert read_rows_parquet(path) == rows


def test_a_value_arrow_would_change_is_refused_naming_row_and_field(tmp_path):
    rows = [_row(0, {"table": {"score": [1]}}), _row(1, {"table": {"score": [2.5]}})]
    path = tmp_path / "rows.parquet"
    with pytest.raises(ConfigError) as info:
        write_rows_parquet(rows, path)
    message = str(info.value)
    assert "row 0" in message and "extra_info.tools_kwargs.sql.create_kwargs.table.score[0]" in message
    assert "was 1 and would read back as 1.0" in message and ".jsonl" in message
    assert not path.exists()


def test_rows_whose_fields_clash_in_type_are_refused_with_jsonl_as_the_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot share one Parquet schema.*\.jsonl"):
        write_rows_parquet([{"x": {"v": 1}}, {"x": {"v": "one"}}], tmp_path / "rows.parquet")


def test_jsonl_rows_are_untouched(tmp_path):
    path = write_rows(ROWS, tmp_path / "rows.jsonl")
    assert read_rows(str(path)) == ROWS == [json.loads(line) for line in path.read_text().splitlines()]


def test_numpy_scalars_from_a_generator_are_not_mistaken_for_changes(tmp_path):
    import numpy as np

    rows = [_row(0, {"table": {"age": [np.int64(31)]}, "dialect": np.str_("sqlite")}), _row(1, {"table": {"age": [7]}})]
    assert read_rows_parquet(write_rows_parquet(rows, tmp_path / "rows.parquet")) == rows
