"""verl keys that agentgym accepts (so verl YAMLs and command lines load) but that change nothing here.

Each is listed with what agentgym does instead. Setting one in a YAML or an override warns once per process, so
nothing a user sets is silently ignored. A key that agentgym does act on must not be listed here: the config
tests check that every key of the schema is either listed here or reaches a consumer.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel


class InertConfigKeyWarning(UserWarning):
    """A verl config key that has no effect in agentgym was set."""


_UNSET = object()


@dataclass(frozen=True)
class InertKey:
    instead: str
    same_as_ours: Any = _UNSET
    """A value that asks for exactly what agentgym does anyway: setting it is not worth a warning. Unset: the
    schema's default (verl's), which asks for nothing, so a dumped config that lists every key stays quiet."""


_NO_VALIDATION = "the trainer runs no validation pass; `agentgym rollout` (data.val_files) collects and scores a dataset"
_FSDP2 = "every model is sharded with FSDP2 (fully_shard)"
_TOKEN_EXACT = "trajectories are token-exact by construction (model turns are the engine's own ids), nothing to check"

INERT_KEYS: dict[str, InertKey] = {
    "data.val_batch_size": InertKey(_NO_VALIDATION),
    "data.dataloader_num_workers": InertKey("rows are read into memory once and batched in the driver process"),
    "data.return_raw_chat": InertKey("the agent loop always receives the raw chat messages", same_as_ours=True),
    "data.filter_overlong_prompts": InertKey(
        "a prompt longer than data.max_prompt_length fails its trajectory with an error naming the limit",
        same_as_ours=False),
    "data.truncation": InertKey(
        "a prompt longer than data.max_prompt_length fails its trajectory with an error naming the limit",
        same_as_ours="error"),
    "actor_rollout_ref.hybrid_engine": InertKey(
        "the actor's weights are pushed to the rollout engine after every step", same_as_ours=True),
    "actor_rollout_ref.actor.strategy": InertKey(_FSDP2),
    "actor_rollout_ref.ref.fsdp_config.optimizer_offload": InertKey("the reference model has no optimizer"),
    "actor_rollout_ref.rollout.mode": InertKey(
        "the agent loop always runs episodes concurrently as asyncio tasks (verl's async mode); nothing to choose"),
    "actor_rollout_ref.rollout.prompt_length": InertKey("data.max_prompt_length bounds rollout prompts"),
    "actor_rollout_ref.rollout.response_length": InertKey("data.max_response_length bounds each trajectory's response"),
    "algorithm.filter_groups.metric": InertKey(
        "dynamic sampling compares the trajectories' scores (the configured reward); seq_reward and "
        "seq_final_reward are the same number here, since KL-in-reward is applied after filtering"),
    "actor_rollout_ref.rollout.ignore_eos": InertKey("generation always stops at the model's end-of-turn token",
                                                     same_as_ours=False),
    "actor_rollout_ref.rollout.calculate_log_probs": InertKey(
        "the engines always return the sampled tokens' log-probs", same_as_ours=True),
    "actor_rollout_ref.rollout.val_kwargs.temperature": InertKey(_NO_VALIDATION),
    "actor_rollout_ref.rollout.val_kwargs.top_k": InertKey(_NO_VALIDATION),
    "actor_rollout_ref.rollout.val_kwargs.top_p": InertKey(_NO_VALIDATION),
    "actor_rollout_ref.rollout.val_kwargs.n": InertKey(_NO_VALIDATION),
    "actor_rollout_ref.rollout.val_kwargs.do_sample": InertKey(_NO_VALIDATION),
    "actor_rollout_ref.rollout.multi_turn.enable": InertKey(
        "the agent loop is always multi-turn; a row without tools or interaction ends after one turn",
        same_as_ours=True),
    "actor_rollout_ref.rollout.multi_turn.use_inference_chat_template": InertKey(_TOKEN_EXACT),
    "actor_rollout_ref.rollout.multi_turn.tokenization_sanity_check_mode": InertKey(_TOKEN_EXACT),
    "actor_rollout_ref.rollout.agent.agent_loop_config_path": InertKey(
        "there is one agent loop (agentgym.rollout.agent_loop); tools and interactions come from "
        "multi_turn.tool_config_path and multi_turn.interaction_config_path"),
    "critic.strategy": InertKey(_FSDP2),
    "reward_model.strategy": InertKey("the reward model runs unsharded, one copy per reward worker"),
    "reward_model.model.input_tokenizer": InertKey(
        "the reward model reads the conversation's messages through its own tokenizer's chat template"),
    "critic.model.tokenizer_path": InertKey("the critic reads the actor's token ids; it needs no tokenizer"),
    "trainer.balance_batch": InertKey(
        "micro-batches are always balanced across ranks by token count", same_as_ours=True),
    "trainer.val_before_train": InertKey(_NO_VALIDATION, same_as_ours=False),
    "trainer.test_freq": InertKey(_NO_VALIDATION, same_as_ours=-1),
    "trainer.max_critic_ckpt_to_keep": InertKey(
        "a checkpoint holds actor and critic together; trainer.max_actor_ckpt_to_keep prunes whole checkpoints"),
}


def _set_keys(model: BaseModel, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Dotted keys given explicitly (YAML or override), with their values and their schema defaults."""
    found: dict[str, tuple[Any, Any]] = {}
    for name in model.model_fields_set:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            found.update(_set_keys(value, f"{prefix}{name}."))
        else:
            found[f"{prefix}{name}"] = (value, type(model).model_fields[name].get_default(call_default_factory=True))
    return found


def inert_keys_set(config: BaseModel) -> dict[str, str]:
    """The inert keys this config sets to something agentgym would not do anyway: key -> what we do instead."""
    found = {}
    for key, (value, default) in _set_keys(config).items():
        entry = INERT_KEYS.get(key)
        if entry is None:
            continue
        harmless = default if entry.same_as_ours is _UNSET else entry.same_as_ours
        if value != harmless:
            found[key] = entry.instead
    return found


def warn_inert_keys(config: BaseModel) -> None:
    """One warning per inert key the config sets (Python shows each distinct warning once per process)."""
    for key, instead in inert_keys_set(config).items():
        warnings.warn(f"config key {key} has no effect in agentgym: {instead}.", InertConfigKeyWarning, stacklevel=3)
