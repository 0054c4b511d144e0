"""Two FSDP2 ranks in Ray actors (gloo on CPU) against the single-process reference."""

import pytest
import torch

from agentgym.trainer.driver import RLTrainer

pytestmark = pytest.mark.slow


async def _sequence_logprobs(workers, trajectories):
    from agentgym.trainer.batching import SampleBatch, gather_outputs, plan_forward

    batch = SampleBatch.from_trajectories(trajectories)
    plans = plan_forward(batch, ["loss_mask"], workers.world_size)
    outs = await workers.call("compute_log_prob", [(p,) for p in plans])
    per_token = gather_outputs(plans, [[o["log_probs"] for o in r] for r in outs], len(batch))
    return torch.stack([(lp * m).sum() for lp, m in zip(per_token, batch.fields["loss_mask"])])


async def test_two_rank_fsdp_grpo_step_matches_single_process(ray_session, config_for, trajectories):
    # Large Adam eps: the step is proportional to the gradient, so this compares gradients (see test_actor_local).
    common = ("algorithm.adv_estimator=grpo", "actor_rollout_ref.actor.optim.eps=1.0",
              "actor_rollout_ref.actor.use_kl_loss=true", "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=10",
              "ray_kwargs.ray_init.num_cpus=2")
    reference = RLTrainer(config_for(*common, "trainer.use_ray=false"))
    ref_metrics = await reference.train_step(trajectories)
    expected = await reference.actor_state_dict()
    reference.close()

    trainer = RLTrainer(config_for(*common, "trainer.use_ray=true", "trainer.n_gpus_per_node=2"))
    trainer.start_workers()
    try:
        assert trainer.world_size == 2
        before = await _sequence_logprobs(trainer.workers, trajectories)
        metrics = await trainer.train_step(trajectories)
        after = await _sequence_logprobs(trainer.workers, trajectories)
        rewarded = torch.tensor([t.reward > 0 for t in trajectories])
        assert (after[rewarded] > before[rewarded]).all(), (before, after)
        assert (after[~rewarded] < before[~rewarded]).all(), (before, after)

        got = await trainer.actor_state_dict()
        assert got.keys() == expected.keys()
        for name in expected:
            assert torch.allclose(got[name], expected[name], atol=2e-6, rtol=1e-5), name
        # The device-bucket export gathers the shards too (both ranks in the collectives, rank 0 keeps them).
        packed, nothing = await trainer.workers.call("export_weights", dtype="bf16")
        assert nothing is None and sorted(packed) == sorted(got)
        for name in got:
            assert torch.equal(packed[name], got[name].to(torch.bfloat16)), name
        await trainer.workers.call("release_weights")
        assert metrics["actor/grad_norm"] == pytest.approx(ref_metrics["actor/grad_norm"], rel=1e-4)
        assert metrics["actor/pg_loss"] == pytest.approx(ref_metrics["actor/pg_loss"], abs=1e-6)
        from transformers import AutoModelForCausalLM

        initial = AutoModelForCausalLM.from_pretrained(trainer.config.actor_rollout_ref.model.path).state_dict()
        assert max(float((got[n] - initial[n]).abs().max()) for n in got) > 1e-4
    finally:
        trainer.close()


async def test_only_rank_0_reads_the_weights_and_every_rank_gets_them(ray_session, config_for):
    """Rank 1 starts on the meta device and receives its shards from rank 0 (with a critic beside the actor): the
    gathered actor equals the saved model tensor for tensor. (The first test's match with the single-process run
    covers the buffers and the forward pass.)"""
    from transformers import AutoModelForCausalLM

    cfg = config_for("trainer.use_ray=true", "trainer.n_gpus_per_node=2", "ray_kwargs.ray_init.num_cpus=2",
                     "algorithm.adv_estimator=gae", "critic.enable=true")
    saved = AutoModelForCausalLM.from_pretrained(cfg.actor_rollout_ref.model.path).state_dict()
    trainer = RLTrainer(cfg)
    trainer.start_workers()
    try:
        got = await trainer.actor_state_dict()
        reads = await trainer.workers.call("weights_read_from_disk")
    finally:
        trainer.close()
    assert reads == [True, False]
    assert set(got) <= set(saved)
    for name, tensor in got.items():
        assert torch.equal(tensor, saved[name]), name
