"""A separate rollout pool of SGLang-protocol servers (our test server over the tiny model): each pool actor
launches its server as its own child; the driver's HTTP engine routes over their URLs.

Distributed path (sync and one_step_off): 2 trainer ranks on one node, 2 pool actors on the other (a two-node Ray cluster on this
machine); after every step's sync (trainer rank 0 broadcasts each tensor over gloo while the driver posts
`/update_weights_from_distributed` per bucket) every server's weights, read through `/get_weights_by_name`, equal
the trainer's full parameters in bf16 bit for bit. Disk path: the same check after safetensors written to a
declared-shared folder. Both: the servers' parent is their actor (not the driver), and they are gone after the
trainer's shutdown.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _run(model_dir: Path, out: Path, *args: str) -> dict:
    run = subprocess.run([sys.executable, str(HERE / "disaggregated_servers_run.py"), str(model_dir), str(out), *args],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(HERE.parents[1])})
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(out.read_text())


def _servers_owned_by_their_actors(result: dict) -> None:
    assert sorted(s["actor_pid"] for s in result["servers"]) == sorted(result["actor_pids"])
    for server in result["servers"]:
        assert server["parent"] == server["actor_pid"] != server["driver_pid"], server
    assert result["servers_gone"] == [True] * len(result["servers"]), "no server outlived the shutdown"
    assert result["placement_groups_left"] == 0


@pytest.mark.slow
def test_pool_servers_synced_by_broadcast(tiny_model_dir, tmp_path):
    result = _run(tiny_model_dir, tmp_path / "out.json", "--ranks", "2", "--replicas", "2", "--steps", "3")
    assert result["steps"] == 3 and result["broadcast"]
    trainer, replicas = result["trainer_nodes"], result["replica_nodes"]
    assert len(set(trainer)) == 1 and len(set(replicas)) == 1 and trainer[0] != replicas[0], \
        "the trainer's pool and the rollout pool each packed onto a node of their own"
    assert result["plan"]["buckets"] > 1, "the 1 MB buckets split the tiny model's weights"
    for check in result["checks"]:
        assert check["exact"] == [True, True], f"step {check['step']}: a server differs from the trainer"
    assert len({c["digest"] for c in result["checks"]}) == 3, "the weights moved every step"
    assert set(result["requests_by_server"]) == set(result["urls"]) and all(
        n > 0 for n in result["requests_by_server"].values()), "every server generated"
    _servers_owned_by_their_actors(result)


@pytest.mark.slow
def test_pool_servers_on_the_disk_path(tiny_model_dir, tmp_path):
    result = _run(tiny_model_dir, tmp_path / "out.json", "--ranks", "1", "--replicas", "1", "--steps", "2",
                  "--weight-sync", "disk", "--shared-dir")
    assert result["steps"] == 2 and not result["broadcast"] and result["plan"] is None
    assert all(check["exact"] == [True] for check in result["checks"])
    assert len({c["digest"] for c in result["checks"]}) == 2
    assert result["weight_dirs_left"] == [], "the disk path's folder made for the run was removed at its end"
    _servers_owned_by_their_actors(result)


def _cfg(model_dir, *overrides: str):
    from agentgym.config import load_config

    return load_config(None, [f"actor_rollout_ref.model.path={model_dir}", "trainer.device=cpu", "trainer.use_ray=true",
                              "data.train_batch_size=4", "actor_rollout_ref.actor.ppo_mini_batch_size=4",
                              "actor_rollout_ref.rollout.placement=separate", *overrides])


def test_which_weight_path_a_pool_of_servers_takes(tiny_model_dir):
    from agentgym.errors import ConfigError
    from agentgym.trainer.workers.rollout_pool import weight_sync_path

    assert weight_sync_path(_cfg(tiny_model_dir, "actor_rollout_ref.rollout.name=sglang")) == "distributed"
    assert weight_sync_path(_cfg(tiny_model_dir, "actor_rollout_ref.rollout.name=sglang",
                                 "actor_rollout_ref.rollout.weight_sync=disk")) == "disk"
    assert weight_sync_path(_cfg(tiny_model_dir, "actor_rollout_ref.rollout.name=vllm")) == "disk"
    with pytest.raises(ConfigError, match="built for SGLang servers only"):
        weight_sync_path(_cfg(tiny_model_dir, "actor_rollout_ref.rollout.name=vllm",
                              "actor_rollout_ref.rollout.weight_sync=distributed"))


def test_pool_servers_refuse_settings_they_cannot_honour(tiny_model_dir):
    from agentgym.errors import ConfigError
    from agentgym.rollout.engines.servers.server_engines import pool_server_launcher

    with pytest.raises(Exception, match="drop urls, or set placement=driver"):
        _cfg(tiny_model_dir, "actor_rollout_ref.rollout.name=sglang",
             "actor_rollout_ref.rollout.engine_kwargs.sglang.urls=[http://127.0.0.1:1]")
    cfg = _cfg(tiny_model_dir, "actor_rollout_ref.rollout.name=sglang")
    cfg.actor_rollout_ref.rollout.engine_kwargs["sglang"] = {"launch": {"num_servers": 2, "command": ["true"]}}
    with pytest.raises(ConfigError, match="launches one server on its GPU"):
        pool_server_launcher(cfg, "10.0.0.5", {})
    cfg.actor_rollout_ref.rollout.engine_kwargs["sglang"] = {"launch": {"command": ["true"]}}
    launcher = pool_server_launcher(cfg, "10.0.0.5", {"CUDA_VISIBLE_DEVICES": "3"})
    assert launcher.config.host == "10.0.0.5" and launcher.config.num_servers == 1 and launcher.die_with_parent
    assert launcher._env(0)["CUDA_VISIBLE_DEVICES"] == "3"
    cfg.actor_rollout_ref.rollout.tensor_model_parallel_size = 2
    with pytest.raises(ConfigError, match="without tensor parallelism"):
        pool_server_launcher(cfg, "10.0.0.5", {})


@pytest.mark.slow
def test_pool_servers_one_step_off(tiny_model_dir, tmp_path):
    """The next step's rollout runs on the servers while the trainer updates; each broadcast (which waits for the
    requests in flight) still leaves every server equal to the trainer."""
    result = _run(tiny_model_dir, tmp_path / "out.json", "--ranks", "1", "--replicas", "1", "--steps", "3",
                  "--rollout-mode", "one_step_off")
    assert result["steps"] == 3 and result["broadcast"]
    assert all(check["exact"] == [True] for check in result["checks"])
    assert result["staleness_max"] == [0, 1, 1], "step 1 trains on version 0, later steps one version behind"
    _servers_owned_by_their_actors(result)
