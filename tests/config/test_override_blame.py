"""A bad value given on the command line is blamed on that override, not on the YAML file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agentgym.config import load_config
from agentgym.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
TRAIN_YAML = REPO / "agentgym_envs" / "arithmetic" / "train.yaml"


def test_bad_override_value_names_the_override_not_the_file():
    with pytest.raises(ConfigError) as info:
        load_config(TRAIN_YAML, ["trainer.device=gpu"])
    message = str(info.value)
    assert "trainer.device: Input should be 'auto', 'cuda' or 'cpu' (from the command-line override " \
           "`trainer.device=gpu`)" in message
    assert str(TRAIN_YAML) not in message


def test_bad_value_in_the_file_still_names_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("trainer:\n  device: gpu\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, ["trainer.total_training_steps=3"])
    assert str(info.value).startswith(f"file {path}: invalid config: trainer.device:")
    assert "command-line" not in str(info.value)


def test_a_whole_config_check_names_the_override_and_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("actor_rollout_ref:\n  actor:\n    ppo_mini_batch_size: 8\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, ["data.train_batch_size=4"])
    message = str(info.value)
    assert message.startswith(f"file {path}: invalid config:")
    assert "(from the command-line override `data.train_batch_size=4`)" in message


def test_main_ppo_prints_the_override_as_the_source():
    done = subprocess.run([sys.executable, "-m", "agentgym.trainer.main_ppo", str(TRAIN_YAML), "trainer.device=gpu"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2
    assert "(from the command-line override `trainer.device=gpu`)" in done.stderr
    assert "train.yaml" not in done.stderr
