"""Turn-level credit assignment: rewards on the turn that earned them, exact advantages for each return mode."""

from __future__ import annotations

import statistics

import pytest
import torch

from agentgym.config import load_config
from agentgym.errors import ConfigError
from agentgym.interactions.registry import load_interactions
from agentgym.models import tiny_tokenizer
from agentgym.rollout.agent_loop import AgentLoop, AgentLoopConfig
from agentgym.rollout.scripted_engine import ScriptedEngine
from agentgym.trajectory import Trajectory, TurnSpan
from agentgym.tools.registry import build_tools, load_tool_specs
from agentgym.trainer.algorithms import AdvantageInputs, get_adv_estimator, turn_layout, turn_returns
from agentgym.trainer.driver import RLTrainer
from agentgym_envs.arithmetic import INTERACTION_CONFIG, TOOL_CONFIG
from agentgym_envs.arithmetic.data import ArithmeticTaskConfig, make_rows

T = torch.tensor
WIDTH = 8


def _traj(uid, spans, tool, interaction, final_score):
    """spans: (role, length); tool / interaction: [(reward, assistant turn)]."""
    turns, mask, pos = [], [], 0
    for role, n in spans:
        turns.append(TurnSpan(role, pos, pos + n))
        mask += [1 if role == "assistant" else 0] * n
        pos += n
    return Trajectory(uid=uid, group_id="g", prompt_ids=[1], response_ids=[5] * pos, loss_mask=mask,
                      rollout_logprobs=[0.0] * pos, turns=turns, final_score=final_score,
                      tool_rewards=[r for r, _ in tool], tool_reward_turns=[k for _, k in tool],
                      interaction_rewards=[r for r, _ in interaction],
                      interaction_reward_turns=[k for _, k in interaction])


def _episodes():
    """The math teacher's three stories: a tool call then a right answer; a tool call, a wrong answer and a right
    retry; two wrong answers. Tool steps earn 0.1; the teacher's turn rewards are 1 (first try), 0.5 (retry)."""
    right = _traj("right", [("assistant", 2), ("tool", 1), ("assistant", 2)], [(0.1, 0)], [(1.0, 1)], 1.0)
    retry = _traj("retry", [("assistant", 2), ("tool", 1), ("assistant", 1), ("user", 2), ("assistant", 2)],
                  [(0.1, 0)], [(0.0, 1), (0.5, 2)], 0.5)
    wrong = _traj("wrong", [("assistant", 1), ("user", 1), ("assistant", 1)], [], [(0.0, 0), (0.0, 1)], 0.0)
    return [right, retry, wrong]


def test_each_reward_sits_on_the_last_token_of_its_turn_and_the_rest_at_the_end():
    trajs = _episodes()
    layout = turn_layout(trajs, [t.reward for t in trajs], WIDTH)
    assert torch.allclose(layout.token_rewards, T([
        [0, 0.1, 0, 0, 1.0, 0, 0, 0],  # tool step on turn 0; teacher's 1 on turn 1; remainder 1.1 - 1.1 = 0
        [0, 0.1, 0, 0.0, 0, 0, 0, 0.5],
        [0.0] * WIDTH,
    ]))
    assert layout.token_turns.tolist() == [
        [0, 0, -1, 1, 1, -1, -1, -1],
        [0, 0, -1, 1, -1, -1, 2, 2],
        [0, -1, 1, -1, -1, -1, -1, -1],
    ]
    # a custom score that is not the sum of the parts: the remainder (2 - 1.1) goes on the last model token
    other = turn_layout(trajs[:1], [2.0], WIDTH).token_rewards
    assert other[0, 4].item() == pytest.approx(1.9) and other.sum().item() == pytest.approx(2.0)


def test_a_trajectory_without_turn_indices_is_a_clear_error():
    traj = _episodes()[0]
    traj.tool_reward_turns = []
    with pytest.raises(ValueError, match="right.*1 tool_rewards but 0 turn indices.*turn_credit.mode=outcome"):
        turn_layout([traj], [1.1], WIDTH)


def _advantages(mode, gamma, norm=False):
    trajs = _episodes()
    layout = turn_layout(trajs, [t.reward for t in trajs], WIDTH)
    mask = T([t.loss_mask + [0] * (WIDTH - len(t.loss_mask)) for t in trajs]).float()
    inputs = AdvantageInputs(layout.token_rewards, mask, ["g"] * 3, norm_adv_by_std_in_grpo=norm,
                             token_turns=layout.token_turns, turn_mode=mode, turn_gamma=gamma)
    return get_adv_estimator("grpo")(inputs)


def test_turn_returns_discount_across_turns_not_tokens():
    trajs = _episodes()
    layout = turn_layout(trajs, [t.reward for t in trajs], WIDTH)
    G, reached = turn_returns(layout.token_rewards, layout.token_turns, 0.5)
    # right: r = [.1, 1] -> G = [.1 + .5, 1]; retry: r = [.1, 0, .5] -> G = [.1 + .5*.25, .25, .5]
    assert torch.allclose(G, T([[0.6, 1.0, 0.0], [0.225, 0.25, 0.5], [0.0, 0.0, 0.0]]))
    assert reached.tolist() == [[True, True, False], [True, True, True], [True, True, False]]


def test_outcome_mode_is_todays_grpo_on_the_whole_score():
    trajs = _episodes()
    scores = T([t.reward for t in trajs])  # 1.1, 0.6, 0
    rewards = torch.zeros(3, WIDTH)
    rewards[:, 0] = scores
    mask = T([t.loss_mask + [0] * (WIDTH - len(t.loss_mask)) for t in trajs]).float()
    adv, _ = get_adv_estimator("grpo")(AdvantageInputs(rewards, mask, ["g"] * 3, norm_adv_by_std_in_grpo=False))
    mean = (1.1 + 0.6) / 3
    assert torch.allclose(adv, (scores - mean)[:, None] * mask)


def test_discounted_mode_credits_each_turn_with_its_discounted_return():
    adv, returns = _advantages("discounted", 0.5)
    base = (0.6 + 0.225 + 0.0) / 3  # the group's returns from the start
    expected = T([
        [0.6, 0.6, 0, 1.0, 1.0, 0, 0, 0],
        [0.225, 0.225, 0, 0.25, 0, 0, 0.5, 0.5],
        [0.0, 0, 0.0, 0, 0, 0, 0, 0],
    ])
    mask = (expected != 0) | T([[1, 1, 0, 1, 1, 0, 0, 0], [1, 1, 0, 1, 0, 0, 1, 1], [1, 0, 1, 0, 0, 0, 0, 0]]).bool()
    assert torch.allclose(returns, expected)
    assert torch.allclose(adv, (expected - base) * mask.float(), atol=1e-6)
    # with std: divided by the std of the returns from the start
    adv_std, _ = _advantages("discounted", 0.5, norm=True)
    sd = statistics.stdev([0.6, 0.225, 0.0])
    assert adv_std[1, 6].item() == pytest.approx((0.5 - base) / (sd + 1e-6), rel=1e-5)


def test_discounted_mode_with_gamma_one_gives_the_outcome_advantage_to_every_first_turn():
    adv, _ = _advantages("discounted", 1.0)
    mean = (1.1 + 0.6 + 0.0) / 3
    assert adv[:, 0].tolist() == pytest.approx([1.1 - mean, 0.6 - mean, 0.0 - mean], abs=1e-6)
    # the retry's wrong answer (turn 1) earns only what came after it: 0 + 0.5, not the tool step's 0.1
    assert adv[1, 3].item() == pytest.approx(0.5 - mean, abs=1e-6)


def test_turn_grpo_normalises_each_turn_within_the_samples_that_reached_it():
    adv, _ = _advantages("turn_grpo", 0.5)
    turn0 = (0.6 + 0.225 + 0.0) / 3
    turn1 = (1.0 + 0.25 + 0.0) / 3
    assert adv[:, 0].tolist() == pytest.approx([0.6 - turn0, 0.225 - turn0, 0.0 - turn0], abs=1e-6)
    assert [adv[0, 3].item(), adv[1, 3].item(), adv[2, 2].item()] == pytest.approx(
        [1.0 - turn1, 0.25 - turn1, 0.0 - turn1], abs=1e-6)
    # only the retry reached turn 2: it is compared with the group's turn-0 returns
    assert adv[1, 6].item() == pytest.approx(0.5 - turn0, abs=1e-6)
    adv_std, _ = _advantages("turn_grpo", 0.5, norm=True)
    assert adv_std[0, 3].item() == pytest.approx((1.0 - turn1) / (statistics.stdev([1.0, 0.25, 0.0]) + 1e-6), rel=1e-5)


def test_turn_credit_config_is_checked_against_the_estimator():
    with pytest.raises(ConfigError, match="turn_grpo works with adv_estimator grpo, not rloo"):
        load_config(None, ["algorithm.turn_credit.mode=turn_grpo", "algorithm.adv_estimator=rloo"])
    with pytest.raises(ConfigError, match="gamma=0.9 applies to grpo"):
        load_config(None, ["algorithm.turn_credit.mode=discounted", "algorithm.turn_credit.gamma=0.9",
                           "algorithm.adv_estimator=reinforce_plus_plus"])
    assert load_config(None, ["algorithm.turn_credit.mode=discounted"]).algorithm.turn_credit.gamma == 1.0


async def test_the_agent_loop_records_which_turn_earned_each_reward():
    """Calculator call (turn 0), wrong answer (turn 1), right answer after the teacher's 'try again' (turn 2)."""
    rows = make_rows(ArithmeticTaskConfig(num_rows=1, seed=3))
    truth = rows[0]["reward_model"]["ground_truth"]
    expression = rows[0]["extra_info"]["expression"]
    replies = iter(['<tool_call>\n{"name": "calculator", "arguments": {"expression": "%s"}}\n</tool_call>' % expression,
                    "\\boxed{-123456}", f"\\boxed{{{truth}}}"])
    tokenizer = tiny_tokenizer()
    loop = AgentLoop(ScriptedEngine(tokenizer, lambda conversation, sid: next(replies)), tokenizer,
                     build_tools(load_tool_specs(TOOL_CONFIG)), load_interactions(INTERACTION_CONFIG), AgentLoopConfig())
    [traj] = await loop.run_batch(rows)
    assert not traj.failed, traj.error
    assert len(traj.tool_rewards) == 1 and traj.tool_reward_turns == [0]
    assert traj.interaction_rewards == [0.0, 0.5] and traj.interaction_reward_turns == [1, 2]
    layout = turn_layout([traj], [traj.reward], len(traj.loss_mask))
    answer_ends = [max(p for p in range(s.start, s.end) if traj.loss_mask[p]) for s in traj.turns if s.role == "assistant"]
    assert layout.token_rewards[0, answer_ends[2]].item() == pytest.approx(0.5)
    assert layout.token_rewards[0, answer_ends[1]].item() == 0.0


async def test_a_train_step_with_turn_grpo(config_for):
    trajs = _episodes()
    for t in trajs:
        t.response_ids = [5 + i for i in range(len(t.response_ids))]
    trainer = RLTrainer(config_for("trainer.use_ray=false", "algorithm.turn_credit.mode=turn_grpo",
                                   "algorithm.turn_credit.gamma=0.5", "algorithm.norm_adv_by_std_in_grpo=false"))
    try:
        metrics = await trainer.train_step(trajs, step=1)
    finally:
        trainer.close()
    assert metrics["critic/advantages/max"] == pytest.approx(1.0 - (1.0 + 0.25) / 3, abs=1e-6)
    assert metrics["critic/turns/mean"] == pytest.approx((2 + 3 + 2) / 3)
