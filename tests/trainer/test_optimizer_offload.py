"""`fsdp_config.optimizer_offload`: the optimizer state sits on the offload device between updates and on the
compute device for the step, and the run is the same as without it (the losses and weights to the bit). Also the
step's memory figures on CPU: host RSS per phase, and no GPU keys."""

import torch

from agentgym.trainer.driver import RLTrainer

COMMON = ("algorithm.adv_estimator=grpo", "trainer.use_ray=false")


async def _run(config, trajectories, steps=3):
    trainer = RLTrainer(config)
    trainer.start_workers()
    worker = trainer.workers.worker
    seen_at_step = []
    offload = worker.actor.optimizer_offload

    def before_step(optimizer, args, kwargs):  # what the optimizer sees when it steps
        seen_at_step.append({"resident": offload.resident if offload is not None else True})

    worker.actor.optimizer.register_step_pre_hook(before_step)
    history, between = [], []
    try:
        for _ in range(steps):
            history.append(await trainer.train_step(trajectories))
            between.append(worker.optimizer_state_devices())
        weights = await trainer.actor_state_dict()
    finally:
        trainer.close()
    return history, between, seen_at_step, weights


async def test_offloaded_optimizer_state_moves_between_steps_and_changes_nothing(config_for, trajectories):
    plain, _, _, plain_weights = await _run(config_for(*COMMON), trajectories)
    offloaded, between, at_step, weights = await _run(
        config_for(*COMMON, "actor_rollout_ref.actor.fsdp_config.optimizer_offload=true"), trajectories)

    for before, after in zip(plain, offloaded):
        for key in ("actor/pg_loss", "actor/grad_norm", "actor/entropy", "critic/advantages/mean"):
            assert before[key] == after[key], key
    for name, tensor in plain_weights.items():
        assert torch.equal(weights[name], tensor), name
    assert all(b["offloaded"] and b["devices"] == ["cpu"] for b in between)
    assert [b["moves"] for b in between] == [1, 3, 5], "one load and one offload per update (none before the first)"
    assert all(s["resident"] for s in at_step), "the optimizer steps with its state loaded"


async def test_cpu_steps_report_host_memory_per_phase_and_no_gpu_keys(config_for, trajectories):
    history, _, _, _ = await _run(config_for(*COMMON), trajectories, steps=1)
    metrics = history[0]
    for phase in ("old_log_prob", "update"):
        assert 0.05 < metrics[f"memory/{phase}/host_rss_gib"] < 64
    assert not [k for k in metrics if k.startswith("memory/") and not k.endswith("/host_rss_gib")]
