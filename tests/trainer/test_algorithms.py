"""Algorithms against values worked out by hand (see the comments next to each expectation)."""

import math

import pytest
import torch

from agentgym.trainer.algorithms import (
    AdaptiveKLController,
    agg_loss,
    apply_kl_in_reward,
    compute_policy_loss,
    compute_value_loss,
    discounted_returns,
    entropy_from_logits,
    gae_advantage,
    grpo_outcome_advantage,
    kl_penalty,
    logprobs_from_logits,
    masked_whiten,
    place_outcome_rewards,
    reinforce_plus_plus_advantage,
    reinforce_plus_plus_baseline_advantage,
    rloo_advantage,
)

T = torch.tensor


def test_grpo_group_normalised_and_masked():
    scores = T([1.0, 0.0, 1.0, 1.0])
    mask = T([[1, 1, 0], [1, 0, 1], [1, 1, 1], [0, 1, 1]]).float()
    adv, _ = grpo_outcome_advantage(scores, mask, ["a", "a", "b", "b"])
    # group a: mean .5, unbiased std sqrt(.5) -> +-0.7071; group b identical scores -> 0
    s = 0.5 / math.sqrt(0.5)
    assert torch.allclose(adv, T([[s, s, 0], [-s, 0, -s], [0, 0, 0], [0, 0, 0]]), atol=1e-5)


def test_dr_grpo_no_std_normalisation_and_singleton_group():
    adv, _ = grpo_outcome_advantage(T([3.0, 1.0, 5.0]), torch.ones(3, 2), [0, 0, 1], norm_adv_by_std_in_grpo=False)
    assert torch.allclose(adv, T([[1.0, 1.0], [-1.0, -1.0], [0.0, 0.0]]))


def test_rloo_leave_one_out_baseline():
    adv, _ = rloo_advantage(T([1.0, 2.0, 6.0]), torch.ones(3, 1), ["g"] * 3)
    # baselines: (2+6)/2=4, (1+6)/2=3.5, (1+2)/2=1.5
    assert torch.allclose(adv[:, 0], T([-3.0, -1.5, 4.5]))


def test_outcome_reward_lands_on_last_model_token():
    mask = T([[1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]).float()
    rewards = place_outcome_rewards(T([2.0, 3.0, 4.0]), mask)
    assert torch.equal(rewards, T([[0, 2.0, 0, 0], [0, 0, 3.0, 0], [0, 0, 0, 0]]))


def test_discounted_returns_skip_environment_tokens():
    mask = T([[1, 0, 1, 1]]).float()
    rewards = T([[0, 0, 0, 1.0]])
    # t3: 1; t2: .5*1; t1 tool token passes .5 through (masked to 0); t0: .5*.5
    assert torch.allclose(discounted_returns(rewards, mask, 0.5), T([[0.25, 0, 0.5, 1.0]]))


def test_reinforce_plus_plus_whitens_returns():
    mask = torch.ones(2, 2)
    rewards = T([[0, 1.0], [0, 3.0]])
    adv, returns = reinforce_plus_plus_advantage(rewards, mask, gamma=1.0)
    assert torch.allclose(returns, T([[1.0, 1.0], [3.0, 3.0]]))
    # mean 2, unbiased var 4/3
    expected = (returns - 2) / math.sqrt(4 / 3)
    assert torch.allclose(adv, expected, atol=1e-5)


def test_reinforce_plus_plus_baseline_subtracts_group_mean_then_whitens():
    mask = torch.ones(4, 1)
    adv, tokens = reinforce_plus_plus_baseline_advantage(T([1.0, 3.0, 0.0, 0.0]), mask, [0, 0, 1, 1])
    assert torch.allclose(tokens[:, 0], T([-1.0, 1.0, 0.0, 0.0]))
    # mean 0, unbiased var 2/3
    assert torch.allclose(adv[:, 0], T([-1.0, 1.0, 0.0, 0.0]) / math.sqrt(2 / 3), atol=1e-5)


def test_gae_steps_over_tool_tokens():
    mask = T([[1, 0, 1]]).float()
    rewards = T([[0, 0, 1.0]])
    values = T([[0.5, 9.0, 0.8]])
    adv, returns = gae_advantage(rewards, values, mask, gamma=0.9, lam=0.5, whiten=False)
    # t2: delta=1-0.8=.2; t1 is a tool token (its value 9 is ignored); t0: delta=.9*.8-.5=.22, A=.22+.45*.2=.31
    assert torch.allclose(adv, T([[0.31, 0.0, 0.2]]), atol=1e-6)
    assert torch.allclose(returns, T([[0.81, 0.0, 1.0]]), atol=1e-6)


def test_gae_credits_reward_on_tool_token_to_previous_model_token():
    adv, _ = gae_advantage(T([[0, 2.0, 0]]), torch.zeros(1, 3), T([[1, 0, 1]]).float(), whiten=False)
    assert torch.allclose(adv, T([[2.0, 0.0, 0.0]]))


def test_masked_whiten_ignores_masked_entries():
    out = masked_whiten(T([[1.0, 100.0, 3.0]]), T([[1, 0, 1]]).float())
    assert out[0, 1] == 0
    assert torch.allclose(out[0, [0, 2]], T([-1.0, 1.0]) / math.sqrt(2.0), atol=1e-4)


LOSS = T([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
MASK = T([[1, 1, 0], [1, 0, 0]]).float()


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("token-mean", 7 / 3),  # (1+2+4)/3
        ("seq-mean-token-sum", 3.5),  # (3+4)/2
        ("seq-mean-token-mean", 2.75),  # (1.5+4)/2
        ("seq-mean-token-sum-norm", 7 / 6),  # (3/3+4/3)/2
    ],
)
def test_agg_modes(mode, expected):
    assert agg_loss(LOSS, MASK, mode).item() == pytest.approx(expected)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_agg_with_global_normalisers_sums_over_micro_batches(mode):
    whole = agg_loss(LOSS, MASK, mode)
    kw = {"num_tokens": MASK.sum(), "num_seqs": 2, "loss_scale_factor": 3.0}
    parts = agg_loss(LOSS[:1], MASK[:1], mode, **kw) + agg_loss(LOSS[1:], MASK[1:], mode, **kw)
    assert parts.item() == pytest.approx(whole.item())


def test_dr_grpo_norm_matches_verls_effective_minibatch_loss():
    """verl's agg_loss returns sum(seq sums)/scale for a micro-batch ((6+4)/3 = 3.333 for the whole batch) and its
    dp_actor multiplies each micro-batch's loss by micro_bs/mini_bs before backward. So a mini-batch of 2 sequences in
    2 micro-batches of 1 backpropagates 6/3*1/2 + 4/3*1/2 = 5/3, what ours returns with the mini-batch's sequence
    count as normaliser (whole or split)."""
    loss, full = T([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]]), torch.ones(2, 3)
    verl_bare = 10 / 3
    verl_effective = (6 / 3) * (1 / 2) + (4 / 3) * (1 / 2)
    assert verl_effective == pytest.approx(verl_bare / 2)
    assert agg_loss(loss, full, "seq-mean-token-sum-norm").item() == pytest.approx(verl_effective)
    kw = {"num_seqs": 2, "loss_scale_factor": 3.0}
    parts = agg_loss(loss[:1], full[:1], "seq-mean-token-sum-norm", **kw) + agg_loss(
        loss[1:], full[1:], "seq-mean-token-sum-norm", **kw)
    assert parts.item() == pytest.approx(verl_effective)
    assert agg_loss(loss, full, "seq-mean-token-sum-norm", norm_seq_mean=False).item() == pytest.approx(verl_bare)
    bare_parts = sum(agg_loss(loss[i:i + 1], full[i:i + 1], "seq-mean-token-sum-norm", loss_scale_factor=3.0,
                              norm_seq_mean=False) for i in range(2))
    assert bare_parts.item() == pytest.approx(verl_bare)


def test_dr_grpo_constant_normaliser():
    assert agg_loss(LOSS, MASK, "seq-mean-token-sum-norm", loss_scale_factor=2.0).item() == pytest.approx(1.75)


def test_clipped_policy_loss_with_and_without_dual_clip():
    old = torch.zeros(1, 4)
    new = torch.log(T([[1.5, 5.0, 0.5, 7.0]]))
    adv = T([[1.0, -1.0, -1.0, 1.0]])
    mask = T([[1, 1, 1, 0]]).float()
    out = compute_policy_loss(old, new, adv, mask, clip_ratio_c=3.0)
    # token losses: -min(1.5,1.2)=-1.2 ; dual clip min(3, max(5,1.2))=3 ; max(.5,.8)=.8 ; 4th masked out
    assert out.loss.item() == pytest.approx((-1.2 + 3.0 + 0.8) / 3, rel=1e-5)
    assert out.clipfrac.item() == pytest.approx(2 / 3)
    assert out.clipfrac_lower.item() == pytest.approx(1 / 3)
    assert out.ppo_kl.item() == pytest.approx(-(math.log(1.5) + math.log(5) + math.log(0.5)) / 3, rel=1e-5)
    plain = compute_policy_loss(old, new, adv, mask, clip_ratio_c=None)
    assert plain.loss.item() == pytest.approx((-1.2 + 5.0 + 0.8) / 3, rel=1e-5)
    asym = compute_policy_loss(old, new, adv, mask, clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=None)
    assert asym.loss.item() == pytest.approx((-1.28 + 5.0 + 0.8) / 3, rel=1e-5)
    with pytest.raises(ValueError, match="clip_ratio_c"):
        compute_policy_loss(old, new, adv, mask, clip_ratio_c=0.5)


def test_policy_gradient_sign_follows_advantage():
    logp = torch.zeros(1, 2, requires_grad=True)
    out = compute_policy_loss(torch.zeros(1, 2), logp, T([[1.0, -1.0]]), torch.ones(1, 2))
    out.loss.backward()
    assert logp.grad[0, 0] < 0 < logp.grad[0, 1]


def test_value_loss_clipped():
    loss, clipfrac = compute_value_loss(T([[1.0, 5.0]]), T([[0.0, 0.0]]), T([[2.0, 0.0]]), T([[1, 0]]).float(), cliprange_value=0.5)
    # clipped prediction .5: max((1-2)^2, (.5-2)^2)=2.25 -> 1.125
    assert loss.item() == pytest.approx(1.125)
    assert clipfrac.item() == 1.0


def test_kl_estimators():
    logp, ref = torch.zeros(1), torch.log(T([0.5]))
    d = math.log(2)
    assert kl_penalty(logp, ref, "kl").item() == pytest.approx(d)
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(d)
    assert kl_penalty(logp, ref, "mse").item() == pytest.approx(0.5 * d * d)
    assert kl_penalty(logp, ref, "low_var_kl").item() == pytest.approx(0.5 + d - 1)
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(0.5 + d - 1)
    assert kl_penalty(ref, logp, "abs").item() == pytest.approx(d)
    with pytest.raises(ValueError, match="low_var_kl"):
        kl_penalty(logp, ref, "full")


def test_kl_in_reward_penalises_only_model_tokens():
    rewards = T([[0.0, 0.0, 1.0]])
    logp, ref = torch.zeros(1, 3), torch.full((1, 3), -1.0)
    new, mean_kl = apply_kl_in_reward(rewards, logp, ref, T([[1, 0, 1]]).float(), beta=0.1, kind="kl")
    assert torch.allclose(new, T([[-0.1, 0.0, 0.9]]))
    assert mean_kl.item() == pytest.approx(1.0)


def test_adaptive_kl_controller_moves_towards_target():
    ctl = AdaptiveKLController(value=0.1, target_kl=0.1, horizon=100)
    ctl.update(current_kl=0.2, n_steps=10)  # error clipped to .2 -> *1.02
    assert ctl.value == pytest.approx(0.102)
    ctl.update(current_kl=0.0, n_steps=10)
    assert ctl.value == pytest.approx(0.102 * 0.98)


def test_entropy_and_logprobs_from_logits():
    logits = torch.zeros(2, 4)
    assert torch.allclose(entropy_from_logits(logits), torch.full((2,), math.log(4)))
    logits = T([[0.0, math.log(3.0)]])
    assert logprobs_from_logits(logits, T([1])).item() == pytest.approx(math.log(0.75))
