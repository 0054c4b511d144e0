"""The seed's GRPO command line (verl's gsm8k multi-turn GRPO example) runs here as written, the model path
aside; what cannot run on this machine stops with a clear error naming the key, never a traceback or a hang."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.code_tool.conftest import _ray_session, ray_local  # noqa: F401

from agentgym_envs.arithmetic import TOOL_CONFIG

ROOT = Path(__file__).resolve().parents[2]

SEED_GRPO = """
algorithm.adv_estimator=grpo data.train_batch_size=256 data.max_prompt_length=1024 data.max_response_length=1024
data.filter_overlong_prompts=True data.truncation=error data.return_raw_chat=True
actor_rollout_ref.actor.optim.lr=1e-6 actor_rollout_ref.model.use_remove_padding=True
actor_rollout_ref.actor.ppo_mini_batch_size=256 actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=32
actor_rollout_ref.actor.use_kl_loss=True actor_rollout_ref.actor.kl_loss_coef=0.001
actor_rollout_ref.actor.kl_loss_type=low_var_kl actor_rollout_ref.actor.entropy_coeff=0
actor_rollout_ref.model.enable_gradient_checkpointing=True actor_rollout_ref.actor.fsdp_config.param_offload=False
actor_rollout_ref.actor.fsdp_config.optimizer_offload=False actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=32
actor_rollout_ref.rollout.tensor_model_parallel_size=2 actor_rollout_ref.rollout.name=sglang
actor_rollout_ref.rollout.gpu_memory_utilization=0.5 actor_rollout_ref.rollout.n=16
actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=32 actor_rollout_ref.ref.fsdp_config.param_offload=True
algorithm.use_kl_in_reward=False trainer.critic_warmup=0 trainer.logger=["console"] trainer.project_name=gsm8k_async_rl
trainer.experiment_name=qwen2.5-3b_function_rm-gsm8k-sgl-multi-w-tool-verify-n16 trainer.n_gpus_per_node=8
trainer.nnodes=1 trainer.save_freq=-1 trainer.test_freq=20 trainer.total_epochs=15
""".split()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("seed")
    subprocess.run([sys.executable, "-m", "agentgym_envs.arithmetic.data", "--out", str(out / "train.parquet"),
                    "--rows", "256"], check=True, cwd=ROOT)
    return out


def _run(args, data, timeout=600):
    cmd = [sys.executable, "-m", "agentgym.trainer.main_ppo", *args, f"data.train_files={data / 'train.parquet'}",
           f"actor_rollout_ref.rollout.multi_turn.tool_config_path={TOOL_CONFIG}"]
    # The run's working directory is the data's (relative paths), so the checkout goes on the path explicitly.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=data, env=env)


def _override(args, **changes):
    out = [a for a in args if a.split("=", 1)[0] not in changes]
    return out + [f"{k}={v}" for k, v in changes.items()]


def test_sglang_without_the_package_or_a_server_says_what_to_do(data, tiny_model_dir):
    result = _run(SEED_GRPO + [f"actor_rollout_ref.model.path={tiny_model_dir}"], data)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "pip install sglang[all]" in result.stderr and "rollout.name=transformers" in result.stderr


def test_more_ranks_than_the_ray_cluster_holds_stop_with_the_key_not_a_hang(ray_local, tiny_model_dir):
    from agentgym.config import load_config
    from agentgym.errors import ConfigError
    from agentgym.trainer.workers.group import RayWorkerGroup

    cfg = load_config(None, [f"actor_rollout_ref.model.path={tiny_model_dir}", "trainer.n_gpus_per_node=8",
                             "trainer.device=cpu", "data.train_batch_size=8", "actor_rollout_ref.actor.ppo_mini_batch_size=8"])
    with pytest.raises(ConfigError, match="8 trainer ranks need 8 CPU"):
        RayWorkerGroup(cfg, 8, total_steps=1)


def test_unsupported_values_and_keys_are_named(data, tiny_model_dir):
    # wandb and mlflow are loggers now (issue 31); a logger that does not exist is still named
    bad = _run(_override(SEED_GRPO, **{"trainer.logger": '["console","neptune"]'}) +
               [f"actor_rollout_ref.model.path={tiny_model_dir}"], data)
    assert bad.returncode != 0 and "trainer.logger" in bad.stderr and "Traceback" not in bad.stderr
    unknown = _run(SEED_GRPO + ["actor_rollout_ref.rollout.enforce_eager=False",
                                f"actor_rollout_ref.model.path={tiny_model_dir}"], data)
    assert unknown.returncode != 0 and "actor_rollout_ref.rollout.enforce_eager" in unknown.stderr


def test_the_seed_line_scaled_to_this_machine_trains_a_step(data, tiny_model_dir, tmp_path):
    """Only sizes change (one CPU rank, the in-process engine, small batches): every other key is as written."""
    args = _override(SEED_GRPO, **{
        "actor_rollout_ref.rollout.name": "transformers", "trainer.n_gpus_per_node": "1", "data.train_batch_size": "2",
        "actor_rollout_ref.rollout.tensor_model_parallel_size": "1",  # one rank: a TP=2 replica needs two
        "actor_rollout_ref.actor.ppo_mini_batch_size": "2", "actor_rollout_ref.rollout.n": "2",
        "data.max_response_length": "32", "trainer.total_training_steps": "1", "trainer.use_ray": "false",
        "trainer.device": "cpu", "trainer.logger": "[jsonl]", "trainer.default_local_dir": str(tmp_path / "run"),
    })
    result = _run(args + [f"actor_rollout_ref.model.path={tiny_model_dir}"], data)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "metrics.jsonl").read_text().strip()
