import json

import pytest

from agentgym.trainer.plot import plot_command, plot_run
from agentgym.trainer.tracking import MetricsTracker, read_metrics


def test_tracker_writes_jsonl_and_plot_draws_pngs(tmp_path):
    tracker = MetricsTracker(tmp_path, ["jsonl", "console", "tensorboard"], total_steps=3)
    for step in (1, 2, 3):
        tracker.log(step, {"critic/score/mean": 0.1 * step, "actor/kl_loss": 0.01 * step, "timing_s/step": 1.0})
    tracker.close()
    # a resumed run re-logs step 3: the latest record wins
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": 3, "critic/score/mean": 0.9}) + "\n")
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3] and records[-1]["critic/score/mean"] == 0.9
    out = tmp_path / "plots"
    paths = plot_run(tmp_path, out)
    assert [p.name for p in paths] == ["reward.png", "kl.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_command([str(tmp_path)]) == 0


def test_plot_missing_run_dir_says_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        plot_run(tmp_path / "nope")
