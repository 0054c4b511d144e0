"""ReMax, OPO, GRPO pass@k, SAPO and GMPO against their papers' formulas on hand-made tensors."""

import math

import pytest
import torch

from agentgym.trainer.algorithms import AdvantageInputs, PolicyLossSettings, get_adv_estimator, get_policy_loss

T = torch.tensor


def _adv(name, scores, mask, groups, **kw):
    rewards = torch.zeros_like(mask)
    rewards[:, -1] = scores  # the outcome on the last token: the estimators read the per-sample sum
    return get_adv_estimator(name)(AdvantageInputs(rewards, mask, groups, **kw))


def test_remax_subtracts_the_greedy_reward_of_each_prompt():
    mask = T([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    adv, returns = _adv("remax", T([1.0, 0.0, 0.5]), mask, ["a", "a", "b"], reward_baselines=T([0.25, 0.25, 1.0]))
    assert torch.allclose(adv, T([[0.75, 0.75, 0.0], [-0.25, 0.0, -0.25], [-0.5, -0.5, -0.5]]))
    assert torch.allclose(returns, T([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.5]]))
    with pytest.raises(ValueError, match="greedy"):
        _adv("remax", T([1.0, 0.0, 0.5]), mask, ["a", "a", "b"])


def test_opo_baseline_is_the_length_weighted_group_mean():
    # lengths 1, 3 in group a: b = (1*1 + 3*0) / 4 = 0.25; group b alone: A = 0
    mask = T([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv, _ = _adv("opo", T([1.0, 0.0, 7.0]), mask, ["a", "a", "b"])
    assert torch.allclose(adv, T([[0.75, 0.0, 0.0], [-0.25, -0.25, -0.25], [0.0, 0.0, 0.0]]))


def test_grpo_passk_credits_only_the_best_sample():
    mask = torch.ones(5, 2)
    scores = T([0.2, 1.0, 0.5, 3.0, 3.0])
    adv, _ = _adv("grpo_passk", scores, mask, list("aaabb"), norm_adv_by_std_in_grpo=False)
    assert torch.allclose(adv[:, 0], T([0.0, 0.5, 0.0, 0.0, 0.0]))  # 1.0 - 0.5; a tie at the top earns nothing
    adv, _ = _adv("grpo_passk", scores, mask, list("aaabb"))
    std = torch.std(T([0.2, 1.0, 0.5]))
    assert adv[1, 0].item() == pytest.approx(0.5 / (std.item() + 1e-6), rel=1e-5)
    with pytest.raises(ValueError, match="rollout.n >= 2"):
        _adv("grpo_passk", scores, mask, list("aaabc"))


def _loss(name, old, new, adv, mask, **settings):
    new = new.clone().requires_grad_(True)
    out = get_policy_loss(name)(old, new, adv, mask, PolicyLossSettings(**settings))
    out.loss.backward()
    return out, new.grad


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_sapo_soft_gate_value_and_gradient():
    ratios = [[1.0, 1.5, 0.5], [2.0, 1.0, 1.0]]
    new = torch.log(T(ratios))
    adv = T([[1.0, 1.0, -1.0], [-2.0, -2.0, 0.0]])
    mask = T([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    out, grad = _loss("sapo", torch.zeros(2, 3), new, adv, mask, loss_agg_mode="token-mean")

    def gate(r, tau):
        return _sigmoid(tau * (r - 1)) * 4 / tau

    seq0 = [-gate(1.0, 1.0) * 1, -gate(1.5, 1.0) * 1, -gate(0.5, 1.05) * -1]
    seq1 = [-gate(2.0, 1.05) * -2, -gate(1.0, 1.05) * -2]
    # seq-mean-token-mean whatever loss_agg_mode says
    assert out.loss.item() == pytest.approx((sum(seq0) / 3 + sum(seq1) / 2) / 2, rel=1e-5)
    # d(-A f(r))/dlog r = -A f'(r) r with f'(r) = 4 s (1 - s), s = sigmoid(tau (r - 1)); f'(1) = 1: plain PG on-policy
    def dgate(r, tau):
        s = _sigmoid(tau * (r - 1))
        return 4 * s * (1 - s) * r

    assert grad[0, 0].item() == pytest.approx(-1.0 / 6, rel=1e-5)
    assert grad[0, 1].item() == pytest.approx(-dgate(1.5, 1.0) / 6, rel=1e-5)
    assert grad[0, 2].item() == pytest.approx(dgate(0.5, 1.05) / 6, rel=1e-5)
    assert grad[1, 0].item() == pytest.approx(2 * dgate(2.0, 1.05) / 4, rel=1e-5)
    assert grad[1, 2].item() == 0.0
    with pytest.raises(ValueError, match="tau_pos"):
        _loss("sapo", torch.zeros(2, 3), new, adv, mask, tau_pos=0.0)


def test_geo_mean_ratio_clips_log_ratios_by_advantage_sign():
    new = T([[0.5, -0.1, 0.0], [-0.5, 0.3, 9.0]])
    adv = T([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]])
    mask = T([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    out, grad = _loss("geo_mean", torch.zeros(2, 3), new, adv, mask)
    # A > 0: min(log r, clip(log r, -.2, .2)) -> .2, -.1, 0; A < 0: max(log r, clip) -> -.2, .3
    m0, m1 = (0.2 - 0.1 + 0.0) / 3, (-0.2 + 0.3) / 2
    assert out.loss.item() == pytest.approx((-math.exp(m0) + math.exp(m1)) / 2, rel=1e-5)
    # the clipped tokens get no gradient; the others d/dlog r_t of -A exp(mean) / 2 = -A exp(mean) / (2 n)
    assert torch.allclose(grad[0], T([0.0, -math.exp(m0) / 6, -math.exp(m0) / 6]), atol=1e-6)
    assert torch.allclose(grad[1], T([0.0, math.exp(m1) / 4, 0.0]), atol=1e-6)
    assert out.clipfrac.item() == pytest.approx(1 / 5) and out.clipfrac_lower.item() == pytest.approx(2 / 5)
