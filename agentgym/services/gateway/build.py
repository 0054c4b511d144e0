"""A gateway from a run config: its engine, tokenizer, tool-call format, sampling and response budget (the
agent loop's, so a gateway's samples are what training would sample), and its reward function."""

from __future__ import annotations

from typing import Any

from agentgym.config.schema import AgentGymConfig
from agentgym.parsers import get_parser
from agentgym.rollout.build import agent_loop_config
from agentgym.rollout.engines.registry import make_engine
from agentgym.services.gateway.recorder import RecorderConfig, TrajectoryRecorder
from agentgym.services.gateway.server import Gateway, GatewayConfig


def make_recorder(cfg: AgentGymConfig, tokenizer: Any | None = None) -> TrajectoryRecorder:
    if tokenizer is None:
        from transformers import AutoTokenizer

        model = cfg.actor_rollout_ref.model
        tokenizer = AutoTokenizer.from_pretrained(model.tokenizer_path or model.path)
    loop = agent_loop_config(cfg, seed=cfg.data.seed)
    return TrajectoryRecorder(make_engine(cfg), tokenizer, get_parser(loop.parser), RecorderConfig(
        sampling=loop.sampling, max_response_tokens=loop.max_response_tokens, max_prompt_tokens=loop.max_prompt_tokens))


def make_gateway(cfg: AgentGymConfig, *, model_name: str | None = None) -> Gateway:
    """`custom_reward_function`, when set, scores a session's trajectory for which the agent reported no reward."""
    from agentgym.rewards.functions import load_user_function
    from agentgym.rewards.managers import RewardFunction

    recorder = make_recorder(cfg)
    fn = load_user_function(cfg.custom_reward_function)
    reward_fn = None
    if fn is not None:
        scorer = RewardFunction(fn, tokenizer=recorder.tokenizer, reward_fn_key=cfg.data.reward_fn_key,
                                reward_kwargs=dict(cfg.custom_reward_function.reward_kwargs))

        async def reward_fn(traj):
            return (await scorer.acall_one(traj)).score

    name = model_name or str(cfg.actor_rollout_ref.model.path).rstrip("/").rsplit("/", 1)[-1] or "agentgym-policy"
    return Gateway(recorder, GatewayConfig(model_name=name), reward_fn=reward_fn)
