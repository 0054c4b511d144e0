"""trainer.logger: W&B (offline, read back from its run file) and MLflow (a local SQLite store, read back through its
client) get the same metric names, the config and each step's trajectory table; a resumed run continues both runs;
the trainer logs through them in `fit`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentgym.config import load_config
from agentgym.config.schema import TrackingConfig
from agentgym.errors import ConfigError
from agentgym.trainer.tracking import _MLFLOW_KEY, METRICS_FILE, TABLE_COLUMNS, MetricsTracker
from agentgym.trajectory import Trajectory

wandb = pytest.importorskip("wandb")
pytest.importorskip("mlflow")

STEPS = [{"critic/score/mean": 0.5, "timing_s/step": 1.25, "response_length/mean": 7.0, "tool/code interp:calls": 3},
         {"critic/score/mean": 0.75, "timing_s/step": 1.5, "response_length/mean": 9.0, "tool/code interp:calls": 4}]


def wandb_records(path: Path):
    """The records of a W&B run file (`run-<id>.wandb`): W&B's LevelDB-style log of protobuf `Record`s."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:8]
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7 or data[pos + 6] == 0:  # block trailer / padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        payload, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (2, 3):  # first / middle fragment
            pending = payload if kind == 2 else pending + payload
            continue
        chunk, pending = (payload if kind == 1 else pending + payload), b""
        record = wandb_internal_pb2.Record()
        record.ParseFromString(chunk)
        yield record


def wandb_run(run_dir: Path) -> dict:
    runs = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    history, config, ids = [], {}, set()
    for path in runs:
        for rec in wandb_records(path):
            kind = rec.WhichOneof("record_type")
            if kind == "history":
                history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
            elif kind == "config":
                config.update({u.key: json.loads(u.value_json) for u in rec.config.update})
            elif kind == "run":
                ids.add(rec.run.run_id)
    return {"history": history, "config": config, "ids": ids, "dirs": [p.parent for p in runs]}


def trajectories() -> list[Trajectory]:
    messages = [{"role": "user", "content": "What is 2+3?"},
                {"role": "assistant", "content": "<tool_call>...</tool_call>"},
                {"role": "tool", "content": "Exit code: 0\n--- stdout ---\n5"},
                {"role": "assistant", "content": "\\boxed{5}"}]
    return [Trajectory(uid=f"g{k // 2}-{k}", group_id=f"g{k // 2}", prompt_ids=[1, 2], response_ids=[3] * (4 + k),
                       messages=messages, final_score=float(k % 2), num_tool_calls=1) for k in range(4)]


def run_steps(run_dir: Path, steps: range, **kw) -> MetricsTracker:
    tracker = MetricsTracker(run_dir, ["jsonl", "wandb", "mlflow"], total_steps=4, project="agentgym-test",
                             experiment="tracking", tracking=TrackingConfig(wandb_mode="offline",
                                                                             trajectory_table_rows=3), **kw)
    tracker.log_config({"trainer": {"project_name": "agentgym-test", "logger": ["wandb", "mlflow"]},
                        "algorithm": {"adv_estimator": "grpo"}})
    if steps.start > 1:
        tracker.resume_at(steps.start - 1)
    for step in steps:
        tracker.log(step, STEPS[(step - 1) % 2])
        tracker.log_trajectories(step, trajectories())
    return tracker


def test_wandb_and_mlflow_get_the_same_metrics_config_and_tables(tmp_path):
    tracker = run_steps(tmp_path, range(1, 3))
    client, run_id = tracker.sinks["mlflow"].client, tracker.sinks["mlflow"].run_id
    tracker.close()

    # W&B, offline: one run, both steps, the names as logged, a table per step, the config.
    wb = wandb_run(tmp_path)
    assert len(wb["ids"]) == 1 and wb["ids"] == {(tmp_path / "wandb_run_id").read_text().strip()}
    steps = [h for h in wb["history"] if "critic/score/mean" in h]
    assert [h["_step"] for h in steps] == [1, 2]
    assert [h["critic/score/mean"] for h in steps] == [0.5, 0.75]
    assert all(set(STEPS[0]) <= set(h) for h in steps)
    tables = [h for h in wb["history"] if h.get("trajectories/_type") == "table-file"]
    assert [h["_step"] for h in tables] == [1, 2] and all(h["trajectories/nrows"] == 3 for h in tables)
    table = json.loads((wb["dirs"][0] / "files" / tables[0]["trajectories/path"]).read_text())
    assert table["columns"] == list(TABLE_COLUMNS)
    row = dict(zip(table["columns"], table["data"][1]))
    assert (row["uid"], row["reward"], row["num_tool_calls"], row["assistant_turns"]) == ("g0-1", 1.0, 1, 2)
    assert row["prompt"] == "[user] What is 2+3?" and row["response"].endswith("[assistant] \\boxed{5}")
    assert wb["config"]["algorithm"] == {"adv_estimator": "grpo"}

    # MLflow, a SQLite store in the run directory: same names (a character MLflow refuses becomes _).
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "tracking"
    assert set(run.data.metrics) == {"critic/score/mean", "timing_s/step", "response_length/mean",
                                     "tool/code interp_calls"}
    history = client.get_metric_history(run_id, "critic/score/mean")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.75)]
    assert run.data.params["algorithm.adv_estimator"] == "grpo"
    artifacts = {a.path for a in client.list_artifacts(run_id)} | {a.path for a in client.list_artifacts(run_id, "trajectories")}
    assert {"config.json", "trajectories/step_000001.json", "trajectories/step_000002.json"} <= artifacts
    local = Path(client.download_artifacts(run_id, "trajectories/step_000002.json", str(tmp_path / "dl")))
    assert json.loads(local.read_text())["data"][0][:3] == [2, "g0-0", "g0"]

    # jsonl: the same names, and the config next to it.
    records = [json.loads(line) for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert [set(r) - {"step"} for r in records] == [set(STEPS[0])] * 2
    assert json.loads((tmp_path / "run_config.json").read_text())["algorithm"] == {"adv_estimator": "grpo"}


def test_a_resumed_run_continues_the_same_wandb_and_mlflow_runs(tmp_path):
    first = run_steps(tmp_path, range(1, 3))
    run_id = first.sinks["mlflow"].run_id
    first.close()
    second = run_steps(tmp_path, range(3, 5))
    assert second.sinks["mlflow"].run_id == run_id
    client = second.sinks["mlflow"].client
    second.close()
    assert [m.step for m in client.get_metric_history(run_id, "timing_s/step")] == [1, 2, 3, 4]
    wb = wandb_run(tmp_path)
    assert len(wb["ids"]) == 1  # the second process resumed the W&B run by its id
    assert sorted(h["_step"] for h in wb["history"] if "critic/score/mean" in h) == [1, 2, 3, 4]


def test_logger_names_are_checked(tmp_path):
    assert load_config(None, ["trainer.logger=[console,wandb,mlflow]"]).trainer.logger == ["console", "wandb", "mlflow"]
    with pytest.raises(ConfigError, match="neptune"):
        load_config(None, ["trainer.logger=[neptune]"])
    with pytest.raises(ConfigError, match="not a logger"):
        MetricsTracker(tmp_path, ["jsonl", "neptune"])


@pytest.mark.slow
async def test_fit_logs_metrics_config_and_trajectory_tables_to_mlflow(config_for, tmp_path):
    from agentgym.trainer.driver import RLTrainer

    from .test_resume import DATASET, SamplingEngine

    config = config_for("trainer.use_ray=false", "trainer.total_training_steps=2", "trainer.logger=[jsonl,mlflow]",
                        f"trainer.default_local_dir={tmp_path}", "trainer.experiment_name=fit-test")
    engine = SamplingEngine(config.actor_rollout_ref.model.path)
    trainer = RLTrainer(config, collect=engine.collect, engine=engine, dataset=DATASET)
    try:
        history = await trainer.fit()
    finally:
        trainer.close()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run((tmp_path / "mlflow_run_id").read_text().strip())
    assert run.info.run_name == "fit-test" and run.info.status == "FINISHED"
    logged = {_MLFLOW_KEY.sub("_", k) for k, v in history[1].items() if isinstance(v, (int, float))}
    assert logged and logged <= set(run.data.metrics), logged - set(run.data.metrics)
    assert "critic/score/mean" in logged and "timing_s/step" in logged
    assert run.data.params["trainer.experiment_name"] == "fit-test"
    assert [a.path for a in client.list_artifacts(run.info.run_id, "trajectories")] == [
        "trajectories/step_000001.json", "trajectories/step_000002.json"]
