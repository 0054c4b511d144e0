"""Registered policy losses, estimators and rollout correction against their papers' formulas on hand-made tensors."""

import math
import typing

import pytest
import torch

from agentgym.config.schema import AdvEstimator, LossMode
from agentgym.trainer.algorithms import (
    ADV_ESTIMATOR_FNS,
    POLICY_LOSSES,
    AdvantageInputs,
    PolicyLossSettings,
    get_adv_estimator,
    get_policy_loss,
    gpg_advantage,
    overlong_penalty,
    rollout_is_weights,
)

T = torch.tensor


def test_registries_match_the_config_schema():
    assert set(POLICY_LOSSES) == set(typing.get_args(LossMode))
    assert set(ADV_ESTIMATOR_FNS) == set(typing.get_args(AdvEstimator))


def test_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match="policy_loss.loss_mode 'ppo'.*vanilla"):
        get_policy_loss("ppo")
    with pytest.raises(ValueError, match="adv_estimator 'reinforce'.*grpo"):
        get_adv_estimator("reinforce")


def _loss(name, old, new, adv, mask, **settings):
    new = new.clone().requires_grad_(True)
    out = get_policy_loss(name)(old, new, adv, mask, PolicyLossSettings(**settings))
    out.loss.backward()
    return out, new.grad


def test_vanilla_applies_token_weights():
    old = torch.zeros(1, 4)
    new = torch.log(T([[1.5, 5.0, 0.5, 7.0]]))
    adv, mask = T([[1.0, -1.0, -1.0, 1.0]]), T([[1, 1, 1, 0]]).float()
    out = get_policy_loss("vanilla")(old, new, adv, mask, PolicyLossSettings(), token_weights=T([[1.0, 0.5, 2.0, 9.0]]))
    # per-token losses -1.2, 3 (dual clip), .8 as in test_algorithms, weighted 1, .5, 2
    assert out.loss.item() == pytest.approx((-1.2 + 1.5 + 1.6) / 3, rel=1e-5)


def test_gspo_sequence_ratio_clip_and_gradient():
    old = torch.zeros(2, 3)
    new = T([[math.log(2.0), 0.0, 5.0], [0.3, 0.3, 0.3]])
    mask = T([[1, 1, 0], [1, 1, 1]]).float()
    adv = T([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]])
    out, grad = _loss("gspo", old, new, adv, mask, loss_agg_mode="token-mean")
    # s_0 = exp(ln2/2) = 1.414 -> clipped to 1.2 with A=+1: -1.2 per token; s_1 = exp(.3) with A=-1: max(1.35, 1.2)
    # seq-mean-token-mean whatever loss_agg_mode says: (-1.2 + e^.3) / 2
    assert out.loss.item() == pytest.approx((-1.2 + math.exp(0.3)) / 2, rel=1e-5)
    assert out.clipfrac.item() == pytest.approx(2 / 5)
    # clipped sequence: no gradient; the other: d/dlogp_t of -A*s/2 averaged over 3 tokens = s/6 each
    assert torch.allclose(grad[0], torch.zeros(3))
    assert torch.allclose(grad[1], torch.full((3,), math.exp(0.3) / 6), atol=1e-6)


def test_gpg_is_plain_policy_gradient():
    out, grad = _loss("gpg", torch.zeros(1, 2), T([[-1.0, -2.0]]), T([[1.0, -1.0]]), torch.ones(1, 2))
    assert out.loss.item() == pytest.approx((1.0 - 2.0) / 2)  # -A*logp = 1, -2
    assert torch.allclose(grad, T([[-0.5, 0.5]]))


def test_cispo_clips_the_weight_but_keeps_every_gradient():
    old = torch.zeros(1, 3)
    new = torch.log(T([[1.5, 0.5, 1.1]]))
    adv, mask = T([[1.0, 1.0, -1.0]]), torch.ones(1, 3)
    out, grad = _loss("cispo", old, new, adv, mask, clip_ratio_high=0.28)
    w = [1.28, 0.8, 1.1]  # sg[clip(r, .8, 1.28)]
    expected = -(w[0] * math.log(1.5) + w[1] * math.log(0.5) - w[2] * math.log(1.1)) / 3
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert torch.allclose(grad, T([[-1.28 / 3, -0.8 / 3, 1.1 / 3]]), atol=1e-6)
    assert out.clipfrac.item() == pytest.approx(2 / 3)


# Cov(logp, A): A - mean(A) = [1.5, -2.5, .5, .5], logp - mean = [1, -1, 0, 0] -> cov [1.5, 2.5, 0, 0]
COV_LOGP = T([[0.0, -2.0, -1.0, -1.0]])
COV_ADV = T([[2.0, -2.0, 1.0, 1.0]])


def test_clip_cov_detaches_high_covariance_tokens():
    mask = torch.ones(1, 4)
    # ratio 1 everywhere (old = new), so PPO clips nothing; token losses -A = [-2, 2, -1, -1]
    out, grad = _loss("clip_cov", COV_LOGP, COV_LOGP, COV_ADV, mask, clip_cov_ratio=0.5)
    # both tokens with cov in (1, 5) dropped (0.5 * 4 = 2 of them): (-1 - 1) / 4
    assert out.loss.item() == pytest.approx(-0.5)
    assert out.clipfrac.item() == pytest.approx(0.5)
    assert torch.allclose(grad, T([[0.0, 0.0, -0.25, -0.25]]))
    # a band (1, 2) holds token 0 only; at least one token is always picked
    out, grad = _loss("clip_cov", COV_LOGP, COV_LOGP, COV_ADV, mask, clip_cov_ub=2.0)
    assert out.loss.item() == pytest.approx((2.0 - 1.0 - 1.0) / 4)
    assert grad[0, 0] == 0 and grad[0, 1] != 0


def test_kl_cov_penalises_the_top_covariance_tokens():
    d = T([[0.1, -0.2, 0.0, 0.3]])
    out, _ = _loss("kl_cov", COV_LOGP - d, COV_LOGP, COV_ADV, torch.ones(1, 4), kl_cov_ratio=0.25, ppo_kl_coef=0.1)
    # -A*exp(d) on all tokens, + .1*|d| on the single top-covariance token (token 1, cov 2.5)
    terms = [-2 * math.exp(0.1), 2 * math.exp(-0.2) + 0.1 * 0.2, -1.0, -math.exp(0.3)]
    assert out.loss.item() == pytest.approx(sum(terms) / 4, rel=1e-5)
    with pytest.raises(ValueError, match="kl_cov_ratio"):
        _loss("kl_cov", COV_LOGP, COV_LOGP, COV_ADV, torch.ones(1, 4), kl_cov_ratio=0.0)


def test_gpg_advantage_rescales_by_share_of_informative_samples():
    adv, _ = gpg_advantage(T([1.0, 0.0, 0.0, 1.0, 1.0, 5.0]), torch.ones(6, 1), list("aaabbc"))
    # group a centred [2/3, -1/3, -1/3]; b flat and c alone carry no signal: M = 3, alpha = 6 / (6 - 3) = 2
    assert torch.allclose(adv[:, 0], T([4 / 3, -2 / 3, -2 / 3, 0.0, 0.0, 0.0]), atol=1e-6)


def test_estimator_registry_runs_from_inputs():
    rewards = T([[0.0, 1.0], [0.0, 0.0]])
    adv, _ = get_adv_estimator("grpo")(AdvantageInputs(rewards, torch.ones(2, 2), [0, 0], norm_adv_by_std_in_grpo=False))
    assert torch.allclose(adv, T([[0.5, 0.5], [-0.5, -0.5]]))
    with pytest.raises(ValueError, match="critic"):
        get_adv_estimator("gae")(AdvantageInputs(rewards, torch.ones(2, 2), [0, 0]))


def test_truncated_importance_weights_token_and_sequence():
    old = T([[0.0, 0.0, -1.0]])
    rollout = T([[math.log(0.5), 0.0, 0.0]])
    mask = T([[1, 1, 1]]).float()
    # pi_old / pi_rollout = [2, 1, e^-1]; truncated at 1.5
    w = rollout_is_weights(old, rollout, mask, "token", threshold=1.5)
    assert torch.allclose(w, T([[1.5, 1.0, math.exp(-1)]]), atol=1e-6)
    # one weight per sequence: 2 * 1 * e^-1 = .7358 (under the threshold); masked tokens get 0
    w = rollout_is_weights(old, rollout, T([[1, 1, 0]]).float(), "sequence", threshold=1.5)
    assert torch.allclose(w, T([[1.5, 1.5, 0.0]]), atol=1e-6)  # 2*1 = 2 truncated to 1.5
    w = rollout_is_weights(old, rollout, mask, "sequence", threshold=5.0)
    assert torch.allclose(w, torch.full((1, 3), 2 * math.exp(-1)), atol=1e-6)
    with pytest.raises(ValueError, match="rollout_is 'step'"):
        rollout_is_weights(old, rollout, mask, "step")


def test_overlong_penalty_is_linear_inside_the_buffer():
    # limit 10, buffer 4: lengths up to 6 free; 8 is half-way (-.5 * 2); 10 gets the full -2
    pen = overlong_penalty(T([3, 6, 8, 10]), max_response_length=10, buffer_len=4, penalty_factor=2.0)
    assert torch.allclose(pen, T([0.0, 0.0, -1.0, -2.0]))
    with pytest.raises(ValueError, match="overlong_buffer.len"):
        overlong_penalty(T([1]), max_response_length=10, buffer_len=0, penalty_factor=1.0)


def test_overlong_buffer_config_is_checked_against_the_length_limit():
    from agentgym.config.schema import AgentGymConfig

    cfg = AgentGymConfig.model_validate({"reward_model": {"overlong_buffer": {"enable": True, "len": 128}}})
    assert cfg.reward_model.overlong_buffer.len == 128
    with pytest.raises(ValueError, match="between 1 and data.max_response_length"):
        AgentGymConfig.model_validate({"reward_model": {"overlong_buffer": {"enable": True, "len": 4096}}})
