"""Text the model wrote (a lone surrogate from a `\\ud800` JSON escape) must reach disk and come back unchanged."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from agentgym.storable_text import dumps_storable, storable_text
from agentgym.trajectory import Trajectory
from agentgym.rollout.trajectory_io import read_jsonl, read_parquet, write_jsonl, write_parquet

LONE = json.loads('"x\\ud800y"')
PAIRED_ESCAPE_TEXT = "a literal \\ud800 stays literal"


def _trajectory() -> Trajectory:
    call = {"id": "c1", "type": "function", "function": {"name": "code_interpreter",
                                                         "arguments": {"code": f"print('{LONE}')"}}}
    return Trajectory(
        uid="u", group_id="g", prompt_ids=[1, 2],
        messages=[{"role": "assistant", "content": LONE, "tool_calls": [call]},
                  {"role": "tool", "content": PAIRED_ESCAPE_TEXT}],
        tool_metrics=[{"language": LONE}],
        error=f"model wrote {LONE}",
    )


def test_jsonl_round_trips_a_lone_surrogate(tmp_path):
    traj = _trajectory()
    path = tmp_path / "t.jsonl"
    assert write_jsonl([traj], path) == 1
    path.read_bytes().decode("utf-8")  # valid UTF-8 for every other reader
    back = read_jsonl(path)[0]
    assert back.messages == traj.messages and back.tool_metrics == traj.tool_metrics and back.error == traj.error


def test_parquet_stores_a_lone_surrogate(tmp_path):
    traj = _trajectory()
    path = tmp_path / "t.parquet"
    assert write_parquet([traj], path) == 1
    back = read_parquet(path)[0]
    assert back.messages == traj.messages and back.tool_metrics == traj.tool_metrics
    assert back.error == "model wrote x\\ud800y"  # a plain text column shows the escape
    assert pq.read_table(path).num_rows == 1


def test_dumps_storable_is_plain_json_dumps_for_ordinary_text():
    value = {"k": ["héllo ☃ 😀", PAIRED_ESCAPE_TEXT]}
    assert dumps_storable(value) == json.dumps(value, ensure_ascii=False)
    assert storable_text("😀") == "😀"
