"""The command-line entry point: YAML + verl overrides, rollout factory, errors for unknown keys."""

import json
import math
import subprocess
import sys
from pathlib import Path

import yaml

from agentgym.trainer.main_ppo import parse_args

REPO = Path(__file__).resolve().parents[2]  # the code under test, not whichever copy is installed

FACTORY = '''
from agentgym.trajectory import Trajectory

class Engine:
    def __init__(self):
        self.calls = 0
    def update_weights(self, state_dict):
        self.calls += 1
    async def close(self):
        import pathlib
        pathlib.Path(__file__).with_name("engine-closed").write_text(str(self.calls))

def make_rollout(config):
    n = config.actor_rollout_ref.rollout.n
    def collect(rows, step):
        return [Trajectory(uid=f"{r['id']}-{k}", group_id=str(r["id"]), prompt_ids=[2, 3], response_ids=[4 + k, 5],
                           loss_mask=[1, 1], rollout_logprobs=[0.0, 0.0], final_score=float(k == 0))
                for r in rows for k in range(n)]
    return collect, Engine()
'''


def test_parse_args_forms():
    assert parse_args(["run.yaml", "a.b=1"]) == ("run.yaml", ["a.b=1"], None)
    assert parse_args(["--config-path", "cfg", "--config-name", "grpo", "x=1"]) == ("cfg/grpo.yaml", ["x=1"], None)
    assert parse_args(["--rollout", "m:f", "x=1"]) == (None, ["x=1"], "m:f")


def test_main_ppo_runs_a_grpo_run_from_the_command_line(tmp_path, tiny_model_path):
    (tmp_path / "my_rollout.py").write_text(FACTORY)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"id": i, "prompt": [{"role": "user", "content": "hi"}]}) + "\n" for i in range(4)))
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"trainer": {"device": "cpu", "use_ray": False, "logger": ["jsonl"]}}))
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "agentgym.trainer.main_ppo", str(config), "--rollout", "my_rollout:make_rollout",
           "algorithm.adv_estimator=grpo", "data.train_batch_size=2", f"data.train_files={data}",
           f"actor_rollout_ref.model.path={tiny_model_path}", "actor_rollout_ref.actor.optim.lr=1e-3",
           "actor_rollout_ref.actor.ppo_mini_batch_size=1", "actor_rollout_ref.rollout.n=2",
           "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=2", "trainer.total_training_steps=2",
           "trainer.n_gpus_per_node=1", f"trainer.default_local_dir={run_dir}", "trainer.save_freq=2"]
    env = {"PYTHONPATH": f"{tmp_path}:{REPO}", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    assert (run_dir / "global_step_2" / "actor").is_dir()
    assert (run_dir / "latest_checkpointed_iteration.txt").read_text() == "2"
    assert (tmp_path / "engine-closed").exists(), "the engine main_ppo built from the factory is closed at the end"


def test_main_ppo_unknown_key_is_an_error_naming_it(tmp_path):
    cmd = [sys.executable, "-m", "agentgym.trainer.main_ppo", "actor_rollout_ref.rollout.multi_turn.max_turns=3"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "actor_rollout_ref.rollout.multi_turn.max_turns" in done.stderr
    assert "did you mean" in done.stderr


def test_main_ppo_step_with_gspo_gpg_rollout_correction_and_overlong_shaping(tmp_path, tiny_model_path):
    (tmp_path / "my_rollout.py").write_text(FACTORY)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"id": i, "prompt": [{"role": "user", "content": "hi"}]}) + "\n" for i in range(2)))
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"trainer": {"device": "cpu", "use_ray": False, "logger": ["jsonl"]}}))
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "agentgym.trainer.main_ppo", str(config), "--rollout", "my_rollout:make_rollout",
           "algorithm.adv_estimator=gpg", "actor_rollout_ref.actor.policy_loss.loss_mode=gspo",
           "algorithm.rollout_correction.rollout_is=token", "reward_model.overlong_buffer.enable=true",
           "reward_model.overlong_buffer.len=512", "reward_model.overlong_buffer.log=true", "data.train_batch_size=2",
           f"data.train_files={data}",
           f"actor_rollout_ref.model.path={tiny_model_path}", "actor_rollout_ref.actor.ppo_mini_batch_size=1",
           "actor_rollout_ref.rollout.n=2", "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=2",
           "trainer.total_training_steps=1", "trainer.n_gpus_per_node=1", f"trainer.default_local_dir={run_dir}"]
    env = {"PYTHONPATH": f"{tmp_path}:{REPO}", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert math.isfinite(metrics["actor/pg_loss"])
    assert metrics["rollout_corr/is_weights/mean"] > 0
    assert metrics["reward/overlong_penalty/min"] < 0  # buffer = the whole length: every response is penalised


def test_main_ppo_dynamic_sampling_fills_the_batch_with_informative_groups(tmp_path, tiny_model_path):
    # odd rows: samples score 1 and 0 (informative); even rows: all 0 (filtered out)
    (tmp_path / "my_rollout.py").write_text(FACTORY.replace('final_score=float(k == 0)',
                                                            'final_score=float(k == 0 and r["id"] % 2 == 1)'))
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"id": i, "prompt": [{"role": "user", "content": "hi"}]}) + "\n" for i in range(8)))
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"trainer": {"device": "cpu", "use_ray": False, "logger": ["jsonl"]}}))
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "agentgym.trainer.main_ppo", str(config), "--rollout", "my_rollout:make_rollout",
           "algorithm.filter_groups.enable=true", "algorithm.filter_groups.max_num_gen_batches=4",
           "data.shuffle=false", "data.train_batch_size=2", f"data.train_files={data}",
           f"actor_rollout_ref.model.path={tiny_model_path}", "actor_rollout_ref.actor.ppo_mini_batch_size=1",
           "actor_rollout_ref.rollout.n=2", "trainer.total_training_steps=1", "trainer.n_gpus_per_node=1",
           f"trainer.default_local_dir={run_dir}"]
    env = {"PYTHONPATH": f"{tmp_path}:{REPO}", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    # rows 0,1 give one informative group, rows 2,3 the second
    assert metrics["dynamic_sampling/num_gen_batches"] == 2
    assert metrics["dynamic_sampling/extra_groups_sampled"] == 2
    assert metrics["critic/score/mean"] == 0.5  # only the two 1/0 groups were trained on
