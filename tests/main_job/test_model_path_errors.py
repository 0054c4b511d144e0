"""A missing or unknown `actor_rollout_ref.model.path` is a one-line error naming the key, not a hub traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentgym.errors import ConfigError
from agentgym.models.local_path import check_model_path

REPO = Path(__file__).resolve().parents[2]
TRAIN_YAML = REPO / "agentgym_envs" / "arithmetic" / "train.yaml"


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


@pytest.mark.parametrize("command", [
    ["-m", "agentgym.trainer.main_ppo", str(TRAIN_YAML)],
    ["-m", "agentgym", "rollout", "--config", str(TRAIN_YAML)],
])
def test_missing_model_path_says_the_key_is_required(tmp_path, command):
    done = _run(*command, cwd=tmp_path)
    assert done.returncode == 2
    assert "`actor_rollout_ref.model.path` is required" in done.stderr
    assert "no model hub is reachable" in done.stderr and "build_tiny_model" in done.stderr
    assert "Traceback" not in done.stderr and "huggingface.co" not in done.stderr


def test_hub_id_not_in_the_cache_is_named():
    with pytest.raises(ConfigError) as info:
        check_model_path("someone/no-such-model")
    assert "`someone/no-such-model` is neither a local directory nor a model in the local Hugging Face cache" in \
        str(info.value)


def test_directory_without_config_json(tmp_path):
    with pytest.raises(ConfigError, match="has no config.json"):
        check_model_path(str(tmp_path))


def test_a_model_directory_passes(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    check_model_path(str(tmp_path))
