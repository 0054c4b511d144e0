"""Checkpoint and resume: a run resumed from step 2 continues exactly like the uninterrupted run.

The rollout side here is real: a Hugging Face copy of the policy in the driver receives the weights after every
step (`update_weights`) and samples the next responses with the driver's torch RNG, so model, optimizer, data
position, weight sync and RNG all have to be restored for the runs to agree.
"""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from agentgym.trajectory import Trajectory
from agentgym.trainer.driver import RLTrainer
from agentgym.trainer.plot import plot_run

pytestmark = pytest.mark.slow


class SamplingEngine:
    """In-process sampler that follows the trainer's weights."""

    def __init__(self, path: str) -> None:
        self.model = AutoModelForCausalLM.from_pretrained(path).eval()
        self.updates = 0

    def update_weights(self, state_dict):
        self.model.load_state_dict(state_dict)
        self.updates += 1

    @torch.no_grad()
    def collect(self, rows, step):
        out = []
        for row in rows:
            for k in range(2):
                ids = torch.tensor([row["prompt_ids"]])
                logits = self.model(ids).logits[0, -1]
                first = int(torch.multinomial(torch.softmax(logits, -1), 1))
                follow = torch.randint(2, 40, (3,)).tolist()
                response = [first, 31, *follow]  # token 31 stands for a tool result (masked)
                out.append(Trajectory(uid=f"{row['id']}-{k}", group_id=str(row["id"]), prompt_ids=row["prompt_ids"],
                                      response_ids=response, loss_mask=[1, 0, 1, 1, 1],
                                      rollout_logprobs=[0.0] * 5, final_score=float(first % 2 == 0)))
        return out


DATASET = [{"id": i, "prompt_ids": [2 + i, 3 + i, 4]} for i in range(6)]


async def _run(config, engine, steps):
    trainer = RLTrainer(config, collect=engine.collect, engine=engine, dataset=DATASET)
    try:
        history = await trainer.fit()
        weights = await trainer.actor_state_dict()
    finally:
        trainer.close()
    return history, weights


async def test_resumed_run_continues_identically(ray_session, config_for, tmp_path):
    common = ("trainer.use_ray=true", "trainer.n_gpus_per_node=2", "ray_kwargs.ray_init.num_cpus=2",
              "data.train_batch_size=2", "actor_rollout_ref.actor.ppo_mini_batch_size=1", "data.shuffle=true",
              "trainer.total_training_steps=3", "trainer.save_freq=1", "trainer.logger=[jsonl]",
              "actor_rollout_ref.actor.optim.lr_warmup_steps=2", "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=12")
    path = config_for().actor_rollout_ref.model.path
    full_history, full = await _run(config_for(*common, f"trainer.default_local_dir={tmp_path / 'a'}"),
                                    SamplingEngine(path), 3)
    assert len(full_history) == 3
    assert (tmp_path / "a" / "global_step_2" / "trainer_state.json").exists()

    # Resume in a fresh directory from run A's step-2 checkpoint.
    engine = SamplingEngine(path)
    resumed_history, resumed = await _run(
        config_for(*common, f"trainer.default_local_dir={tmp_path / 'b'}", "trainer.resume_mode=resume_path",
                   f"trainer.resume_from_path={tmp_path / 'a' / 'global_step_2'}"), engine, 3)
    assert len(resumed_history) == 1  # only step 3 was left
    assert engine.updates == 2  # weights synced at start and after step 3
    for name in full:
        assert torch.equal(full[name], resumed[name]), name
    for key in ("critic/score/mean", "actor/pg_loss", "actor/grad_norm", "actor/lr"):
        assert resumed_history[0][key] == full_history[2][key], key

    lines = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3]
    assert all("actor/entropy" in r and "timing_s/update_actor" in r for r in lines)
    pngs = plot_run(tmp_path / "a")
    assert [p.name for p in pngs] == ["reward.png", "kl.png"] and all(p.stat().st_size > 0 for p in pngs)


async def test_rerun_after_a_kill_during_a_save_resumes_from_the_last_complete_step(ray_session, config_for, tmp_path,
                                                                                   capfd):
    """A kill while step 3 was being saved leaves step 3 logged, its folder incomplete and the pointer empty. The
    re-run says where it resumes, resumes from step 2, and logs step 3 once; a second re-run says it is done."""
    common = ("trainer.use_ray=false", "data.train_batch_size=2", "actor_rollout_ref.actor.ppo_mini_batch_size=1",
              "trainer.total_training_steps=3", "trainer.save_freq=1", "trainer.logger=[jsonl]",
              f"trainer.default_local_dir={tmp_path}")
    path = config_for().actor_rollout_ref.model.path
    history, _ = await _run(config_for(*common), SamplingEngine(path), 3)
    assert len(history) == 3
    (tmp_path / "global_step_3" / "trainer_state.json").unlink()
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("")
    capfd.readouterr()

    history, _ = await _run(config_for(*common), SamplingEngine(path), 3)
    err = capfd.readouterr().err
    assert len(history) == 1
    assert "latest_checkpointed_iteration.txt is empty or unreadable" in err
    assert f"resuming from step 2 of 3: {tmp_path / 'global_step_2'}" in err and "trainer.resume_mode=auto" in err
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3]

    history, _ = await _run(config_for(*common), SamplingEngine(path), 3)
    assert history == [] and "already finished" in capfd.readouterr().err
