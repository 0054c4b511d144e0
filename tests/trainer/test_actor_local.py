"""Single-process actor: the update moves probability the right way, micro-batching does not change the result,
and SFT learns only from model tokens."""

import copy

import pytest
import torch

from agentgym.trajectory import Trajectory
from agentgym.trainer.batching import SampleBatch, gather_outputs, plan_forward
from agentgym.trainer.driver import RLTrainer
from agentgym.trainer.sft import SFTTrainer, select_for_rejection_sampling


async def sequence_logprobs(workers, trajectories) -> torch.Tensor:
    """Sum of log-probs over each trajectory's model tokens under the current actor."""
    batch = SampleBatch.from_trajectories(trajectories)
    plans = plan_forward(batch, ["loss_mask"], workers.world_size)
    outs = await workers.call("compute_log_prob", [(p,) for p in plans])
    per_token = gather_outputs(plans, [[o["log_probs"] for o in r] for r in outs], len(batch))
    return torch.stack([(lp * m).sum() for lp, m in zip(per_token, batch.fields["loss_mask"])])


async def test_grpo_step_raises_logprob_of_rewarded_responses(config_for, trajectories):
    trainer = RLTrainer(config_for("trainer.use_ray=false", "algorithm.adv_estimator=grpo"))
    trainer.start_workers()
    trajectories[0].num_tool_calls = 3
    before = await sequence_logprobs(trainer.workers, trajectories)
    metrics = await trainer.train_step(trajectories)
    assert metrics["rollout/tool_calls/mean"] == pytest.approx(3 / len(trajectories))
    assert metrics["rollout/tool_use_share"] == pytest.approx(1 / len(trajectories))
    after = await sequence_logprobs(trainer.workers, trajectories)
    rewarded = torch.tensor([t.reward > 0 for t in trajectories])
    assert (after[rewarded] > before[rewarded]).all(), (before, after)
    assert (after[~rewarded] < before[~rewarded]).all(), (before, after)
    assert metrics["critic/score/mean"] == pytest.approx(0.5)
    assert metrics["actor/grad_norm"] > 0
    trainer.close()


async def _updated_weights(config, trajectories):
    trainer = RLTrainer(config)
    await trainer.train_step(trajectories)
    state = await trainer.actor_state_dict()
    trainer.close()
    return state


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
async def test_micro_batching_layout_and_checkpointing_do_not_change_the_update(config_for, trajectories, mode):
    # Adam's first step is ~lr*sign(grad): float noise on near-zero gradients would flip signs, so a large eps
    # makes the step proportional to the gradient and the comparison a comparison of gradients.
    common = ("trainer.use_ray=false", f"actor_rollout_ref.actor.loss_agg_mode={mode}", "actor_rollout_ref.actor.optim.eps=1.0",
              "actor_rollout_ref.actor.use_kl_loss=true", "actor_rollout_ref.actor.entropy_coeff=0.01")
    # padded batch in one piece vs packed rows of <= 8 tokens (with activation checkpointing) vs padded singletons
    whole = await _updated_weights(config_for(*common, "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=1000"),
                                   trajectories)
    split = await _updated_weights(
        config_for(*common, "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=8",
                   "actor_rollout_ref.model.use_remove_padding=true",
                   "actor_rollout_ref.model.enable_gradient_checkpointing=true"), trajectories)
    fixed = await _updated_weights(
        config_for(*common, "actor_rollout_ref.actor.use_dynamic_bsz=false",
                   "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1"), trajectories)
    for name in whole:
        assert torch.allclose(whole[name], split[name], atol=1e-6), name
        assert torch.allclose(whole[name], fixed[name], atol=1e-6), name


def _sft_data(tail):
    return [
        Trajectory(uid="s0", group_id="g", prompt_ids=[2, 3], response_ids=[5, 6, 7] + tail,
                   loss_mask=[1, 1, 1] + [0] * len(tail), rollout_logprobs=[0.0] * (3 + len(tail)), final_score=1.0),
        Trajectory(uid="s1", group_id="g", prompt_ids=[4], response_ids=[8, 30, 9, 10],
                   loss_mask=[1, 0, 1, 1], rollout_logprobs=[0.0] * 4, final_score=1.0),
    ]


async def test_sft_learns_model_tokens_and_ignores_masked_ones(config_for):
    cfg = config_for("trainer.use_ray=false", "actor_rollout_ref.actor.optim.lr=5e-3")
    sft = SFTTrainer(cfg)
    data = _sft_data([40, 41])
    before = await sequence_logprobs((sft.start_workers(), sft.workers)[1], data)
    seen = []
    history = await sft.train(data, batch_size=2, epochs=5, on_epoch=lambda epoch, metrics: seen.append((epoch, metrics)))
    after = await sequence_logprobs(sft.workers, data)
    assert history[-1]["sft/loss"] < history[0]["sft/loss"]
    assert seen == list(enumerate(history))
    assert (after > before).all()
    weights_a = (await sft.workers.call("actor_state_dict"))[0]
    sft.close()
    # Different tokens after the last model token (masked out) must not change anything.
    other = SFTTrainer(cfg)
    await other.train(_sft_data([44, 45]), batch_size=2, epochs=5)
    weights_b = (await other.workers.call("actor_state_dict"))[0]
    other.close()
    for name in weights_a:
        assert torch.equal(weights_a[name], weights_b[name]), name


def test_rejection_sampling_selection(trajectories):
    bad = copy.deepcopy(trajectories[0])
    bad.uid, bad.error = "err", "tool crashed"
    kept = select_for_rejection_sampling([*trajectories, bad], min_reward=0.5)
    assert [t.uid for t in kept] == ["a0", "b1"]
    best = select_for_rejection_sampling(trajectories, best_per_group=1)
    assert sorted(t.uid for t in best) == ["a0", "b1"]
