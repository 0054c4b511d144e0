"""The seed's VLM command line: main_ppo with data.image_key on a local tiny Qwen2.5-VL, one GRPO step of each
zoom environment's train.yaml (images in prompts, the zoom tool registered, VLM rewards); and the bare command line
without a dataset stops naming the key to set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentgym_envs.data_cli import write_rows
from agentgym_envs.zoom_color.data import ZoomColorTaskConfig, make_rows as zoom_color_rows
from agentgym_envs.zoom_count.data import ZoomCountTaskConfig, make_rows

ROOT = Path(__file__).resolve().parents[2]
SEED_KEYS = ["algorithm.adv_estimator=grpo", "data.image_key=images", "data.max_prompt_length=1024"]


def _main_ppo(args, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "agentgym.trainer.main_ppo", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("environment", ["zoom_count", "zoom_color"])
def test_seed_command_line_trains_one_step_on_a_zoom_environment(environment, tiny_vlm_dir, tmp_path):
    rows = (make_rows(ZoomCountTaskConfig(num_rows=4)) if environment == "zoom_count"
            else zoom_color_rows(ZoomColorTaskConfig(num_rows=4)))
    data = write_rows(rows, tmp_path / "train.parquet")
    run = tmp_path / "run"
    done = _main_ppo([f"agentgym_envs/{environment}/train.yaml", *SEED_KEYS, "data.train_batch_size=2",
                      f"actor_rollout_ref.model.path={tiny_vlm_dir}",
                      "data.max_response_length=96",  # the seed's 2048 works too; 96 keeps a random model's turns short
                      f"data.train_files={data}", "trainer.total_training_steps=1", "actor_rollout_ref.rollout.n=2",
                      "actor_rollout_ref.actor.ppo_mini_batch_size=2", f"trainer.default_local_dir={run}",
                      f"trainer.rollout_data_dir={run}/rollout"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    trajectories = [json.loads(line) for line in (run / "rollout" / "1.jsonl").read_text().splitlines()]
    assert len(trajectories) == 4 and all(not t["error"] for t in trajectories)
    assert all(t["images"] and t["image_spans"][0]["turn"] is None for t in trajectories)
    assert all(0.0 <= t["reward"] <= 1.0 for t in trajectories)


def test_seed_command_line_without_a_dataset_names_the_key(tiny_vlm_dir, tmp_path):
    done = _main_ppo([*SEED_KEYS, "data.train_batch_size=8", f"actor_rollout_ref.model.path={tiny_vlm_dir}",
                      "data.max_response_length=2048"],
                     tmp_path)
    assert "data.train_files" in done.stderr and "no training rows" in done.stderr


def test_the_paged_engine_serves_the_vlm_and_follows_its_weights(tiny_vlm_dir, tmp_path):
    """The paged engine (the GPU default) on CPU: images at prefill, a group's samples share the image's cache
    blocks, and after a real update (step 2) its logprobs still equal the trainer's: the vision tower's weights
    were synced too."""
    data = write_rows(make_rows(ZoomCountTaskConfig(num_rows=4)), tmp_path / "train.parquet")
    run = tmp_path / "run"
    done = _main_ppo(["agentgym_envs/zoom_count/train.yaml", *SEED_KEYS, "data.train_batch_size=2",
                      f"actor_rollout_ref.model.path={tiny_vlm_dir}", "data.max_response_length=64",
                      f"data.train_files={data}", "trainer.total_training_steps=2", "actor_rollout_ref.rollout.n=2",
                      "actor_rollout_ref.actor.ppo_mini_batch_size=2", f"trainer.default_local_dir={run}",
                      "trainer.logger=[jsonl]", "actor_rollout_ref.actor.optim.lr=0.02",
                      "+actor_rollout_ref.rollout.engine_kwargs.transformers.backend=paged"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in records] == [1, 2]
    for m in records:
        assert m["rollout/engine/prefix_cache_hit_rate"] > 0.3  # the second sample reuses the first's image blocks
        assert m["rollout/logprob_diff/max"] < 1e-3
