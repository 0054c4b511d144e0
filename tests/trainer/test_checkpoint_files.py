"""What a kill at any instant leaves behind must still resume: the pointer file, checkpoint folders, metrics."""

from __future__ import annotations

import json
import os

import pytest

from agentgym.config.schema import AgentGymConfig
from agentgym.trainer.checkpoints import LATEST_FILE, atomic_write_text, find_resume_point
from agentgym.trainer.driver import RLTrainer
from agentgym.trainer.tracking import METRICS_FILE, MetricsTracker, read_metrics


def _checkpoint(root, step, complete=True):
    folder = root / f"global_step_{step}"
    folder.mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"weights")
    if complete:
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


def _trainer(root, mode="auto") -> RLTrainer:
    cfg = AgentGymConfig.model_validate({"trainer": {"default_local_dir": str(root), "resume_mode": mode}})
    return RLTrainer(cfg)


def test_empty_pointer_falls_back_to_the_newest_complete_checkpoint(tmp_path, capsys):
    _checkpoint(tmp_path, 1)
    good = _checkpoint(tmp_path, 2)
    _checkpoint(tmp_path, 3, complete=False)  # killed while saving step 3
    (tmp_path / LATEST_FILE).write_text("")  # ... and while writing the pointer
    assert _trainer(tmp_path).checkpoints.resume_path() == good
    assert "is empty or unreadable; using the newest complete checkpoint instead" in capsys.readouterr().err


def test_pointer_to_an_incomplete_checkpoint_falls_back(tmp_path):
    good = _checkpoint(tmp_path, 2)
    _checkpoint(tmp_path, 4, complete=False)
    (tmp_path / LATEST_FILE).write_text("4")
    point, note = find_resume_point(tmp_path)
    assert point.path == good and point.step == 2 and "global_step_4" in note


def test_intact_pointer_is_followed_and_nothing_means_a_fresh_start(tmp_path):
    assert find_resume_point(tmp_path) == (None, None)
    _checkpoint(tmp_path, 1)
    _checkpoint(tmp_path, 2)
    (tmp_path / LATEST_FILE).write_text("1\n")
    point, note = find_resume_point(tmp_path)
    assert point.step == 1 and note is None
    assert _trainer(tmp_path, mode="disable").checkpoints.resume_path() is None


def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / LATEST_FILE
    atomic_write_text(target, "2")

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, "3")
    assert target.read_text() == "2"
    assert [p.name for p in tmp_path.iterdir()] == [LATEST_FILE], "no temp file left behind"


def test_resume_drops_metrics_logged_after_the_checkpoint(tmp_path):
    tracker = MetricsTracker(tmp_path, ["jsonl"])
    for step in (1, 2, 3):
        tracker.log(step, {"loss": float(step)})
    tracker.close()
    with open(tmp_path / METRICS_FILE, "a") as f:
        f.write('{"step": 4, "lo')  # torn by the kill
    tracker = MetricsTracker(tmp_path, ["jsonl"], start_step=2)
    tracker.resume_at(2)  # the checkpoint of step 2 is where the run resumes
    tracker.log(3, {"loss": 30.0})
    tracker.close()
    steps = [json.loads(line)["step"] for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert steps == [1, 2, 3]
    assert read_metrics(tmp_path)[-1]["loss"] == 30.0
