"""Dataset rows: verl's `data.prompt_key` picks the messages column; malformed rows stop the run with a clear error."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agentgym.errors import ConfigError
from agentgym.rows import read_rows

MESSAGES = [{"role": "user", "content": "What is 2+2?"}]


def test_prompt_key_names_the_messages_column_in_parquet_and_jsonl(tmp_path):
    pq.write_table(pa.Table.from_pylist([{"chat": MESSAGES, "extra_info": {"index": 0}}]), tmp_path / "a.parquet")
    (tmp_path / "b.jsonl").write_text(json.dumps({"chat": MESSAGES, "extra_info": {"index": 1}}) + "\n")
    rows = read_rows([str(tmp_path / "a.parquet"), str(tmp_path / "b.jsonl")], prompt_key="chat")
    assert [r["prompt"] for r in rows] == [MESSAGES, MESSAGES]
    assert [r["extra_info"]["index"] for r in rows] == [0, 1] and rows[0]["chat"] == MESSAGES


@pytest.mark.parametrize("row, message", [
    ({"question": "What is 2+2?"}, "row 1 of .* has no 'prompt' column \\(it has: question\\)"),
    ({"prompt": "What is 2+2?"}, "row 1 of .*'prompt' must be a non-empty list of chat messages"),
    ({"prompt": []}, "must be a non-empty list"),
    ({"prompt": [{"content": "hi"}]}, "must be a non-empty list"),
])
def test_malformed_rows_are_refused_naming_file_and_row(tmp_path, row, message):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"prompt": MESSAGES}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(ConfigError, match=message) as info:
        read_rows(str(path))
    assert "data.prompt_key" in str(info.value)


def _rows(n):
    return [{"prompt": MESSAGES, "extra_info": {"index": i, "pad": "x" * 300}} for i in range(n)]


def test_truncated_jsonl_names_the_file_the_real_line_and_the_fix(tmp_path):
    path = tmp_path / "rows.jsonl"
    text = "".join(json.dumps(row) + "\n" for row in _rows(20))
    lines = text.splitlines(keepends=True)
    path.write_text("".join(lines[:15]) + lines[15][:200])  # cut inside line 16
    with pytest.raises(ConfigError) as info:
        read_rows(str(path))
    message = str(info.value)
    assert f"dataset file {path}, line 16, column" in message
    assert "the file looks truncated" in message and "regenerate" in message


def test_bad_line_inside_jsonl_is_named_without_claiming_truncation(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(_rows(1)[0]) + "\n\n{oops}\n" + json.dumps(_rows(1)[0]) + "\n")
    with pytest.raises(ConfigError, match=r"line 3, column 2: not valid JSON") as info:
        read_rows(str(path))
    assert "truncated" not in str(info.value)


def test_truncated_parquet_names_the_file_and_the_fix(tmp_path):
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(_rows(50)), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ConfigError) as info:
        read_rows(str(path))
    message = str(info.value)
    assert f"dataset file {path} is not a readable parquet file" in message
    assert "truncated" in message and "regenerate" in message
