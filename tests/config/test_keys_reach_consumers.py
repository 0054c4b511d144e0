"""Every accepted config key either reaches the code it is meant for, or warns that it changes nothing here.

`multi_turn.max_parallel_calls` was once accepted and dropped on the way to the session: these tests set keys and
look at what their consumer received.
"""

from __future__ import annotations

import asyncio
import subprocess
import warnings
from pathlib import Path

import pytest

from agentgym.config import load_config
from agentgym.config.inert import INERT_KEYS, InertConfigKeyWarning, inert_keys_set
from agentgym.config.loader import all_keys
from agentgym.models import tiny_tokenizer
from agentgym.rollout.agent_loop import AgentLoop
from agentgym.rollout.build import agent_loop_config
from agentgym.rollout.engines.registry import in_process_engine_config
from agentgym.rollout.scripted_engine import ScriptedEngine
from agentgym.tools.base_tool import BaseTool
from agentgym.tools.schemas import OpenAIFunctionToolSchema, ToolResponse

ROOT = Path(__file__).resolve().parents[2]
MT = "actor_rollout_ref.rollout.multi_turn"
RO = "actor_rollout_ref.rollout"


def test_rollout_keys_reach_the_agent_loop_config():
    cfg = load_config(None, [
        f"{MT}.max_parallel_calls=3", f"{MT}.max_assistant_turns=5", f"{MT}.max_user_turns=2",
        f"{MT}.max_tool_response_length=77", f"{MT}.tool_response_truncate_side=left", f"{MT}.format=llama3_json",
        f"{MT}.tool_schemas_in_prompt=false", f"{RO}.max_num_seqs=9", f"{RO}.temperature=0.7", f"{RO}.top_p=0.9",
        f"{RO}.top_k=11", "data.max_response_length=33", "data.max_prompt_length=44", "data.seed=5",
    ])
    loop = agent_loop_config(cfg, seed=cfg.data.seed)
    assert loop.session.max_parallel_calls == 3
    assert (loop.limits.max_assistant_turns, loop.limits.max_user_turns) == (5, 2)
    assert (loop.limits.max_tool_response_chars, loop.limits.tool_response_truncate_side) == (77, "left")
    assert loop.parser == "llama3_json" and loop.tool_schemas_in_prompt is False
    assert loop.max_concurrent_episodes == 9
    s = loop.sampling
    assert (s.temperature, s.top_p, s.top_k, s.max_new_tokens, s.seed) == (0.7, 0.9, 11, 33, 5)
    assert (loop.max_response_tokens, loop.max_prompt_tokens) == (33, 44)
    greedy = agent_loop_config(load_config(None, [f"{RO}.do_sample=false", f"{RO}.temperature=0.7"]))
    assert greedy.sampling.temperature == 0.0, "verl's do_sample=false means greedy"


def test_engine_keys_reach_the_in_process_engine_config():
    cfg = load_config(None, [f"{RO}.dtype=fp32", f"{RO}.engine_kwargs.transformers.max_batch_size=3",
                             "actor_rollout_ref.model.attn_implementation=eager"])
    engine = in_process_engine_config(cfg)
    assert engine.max_batch_size == 3 and engine.dtype == "float32"


class _Overlap(BaseTool):
    def __init__(self):
        super().__init__({}, OpenAIFunctionToolSchema.model_validate({"type": "function", "function": {
            "name": "wait", "description": "wait", "parameters": {"type": "object", "properties": {}}}}))
        self.running = self.most = 0

    async def execute(self, instance_id, parameters, **kwargs):
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(0.05)
        self.running -= 1
        return ToolResponse(text="ok"), 0.0, {}


@pytest.mark.parametrize("parallel", [1, 3])
async def test_max_parallel_calls_bounds_one_turns_calls_in_the_session(parallel):
    cfg = load_config(None, [f"{MT}.max_parallel_calls={parallel}", f"{MT}.max_assistant_turns=2"])
    call = '<tool_call>\n{"name": "wait", "arguments": {}}\n</tool_call>'

    def policy(conversation, session_id):
        return "done" if "<tool_response>" in conversation else "\n".join([call] * 6)

    tokenizer = tiny_tokenizer()
    tool = _Overlap()
    loop = AgentLoop(ScriptedEngine(tokenizer, policy), tokenizer, {"wait": tool}, {}, agent_loop_config(cfg))
    [traj] = await loop.run_batch([{"prompt": [{"role": "user", "content": "go"}]}])
    assert traj.error is None and traj.num_tool_calls == 6
    assert tool.most == parallel


def test_every_key_is_read_by_agentgym_or_declared_inert():
    """A guard for keys added later: a key no code reads must be listed in config/inert.py with what we do
    instead (the leaf name must be read as an attribute somewhere outside the schema)."""
    source = subprocess.run(["grep", "-rhoE", r"\.[a-z_0-9]+\b", "agentgym", "--include=*.py", "--exclude=inert.py"],
                            cwd=ROOT, capture_output=True, text=True).stdout
    read = {attr[1:] for attr in source.split()}  # schema.py declares fields without a dot; its properties read some
    keys = all_keys()
    leaves = [key for key in keys if not any(other.startswith(key + ".") for other in keys)]
    unread = [key for key in leaves if key not in INERT_KEYS and key.rsplit(".", 1)[-1] not in read]
    assert unread == []
    assert set(INERT_KEYS) <= set(all_keys()), "inert.py lists a key the schema does not have"


def test_inert_keys_warn_once_each_naming_what_happens_instead():
    # gpu_memory_utilization, tensor_model_parallel_size and max_model_len size the paged engine and launched
    # servers, so they are not inert and do not warn.
    overrides = [f"{RO}.tensor_model_parallel_size=2", f"{RO}.gpu_memory_utilization=0.9", f"{RO}.mode=sync",
                 f"{RO}.prompt_length=64", "trainer.balance_batch=true", "data.truncation=error"]
    with warnings.catch_warnings(record=True) as caught:  # the last two ask for what we do anyway
        warnings.simplefilter("always")
        load_config(None, overrides)
    messages = sorted(str(w.message) for w in caught if issubclass(w.category, InertConfigKeyWarning))
    assert len(messages) == 2
    assert messages[0].startswith(f"config key {RO}.mode has no effect in agentgym: ") and "asyncio" in messages[0]
    assert messages[1].startswith(f"config key {RO}.prompt_length has no effect in agentgym: ")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        load_config(None, overrides)
        load_config(None, overrides)
    assert len([w for w in caught if issubclass(w.category, InertConfigKeyWarning)]) <= 2, "once per key"


@pytest.mark.parametrize("path", sorted(ROOT.glob("agentgym_envs/*/train.yaml")), ids=lambda p: p.parent.name)
def test_shipped_configs_set_no_inert_key(path):
    assert inert_keys_set(load_config(path)) == {}
