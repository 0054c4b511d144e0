"""main_ppo with the paged engine (the CUDA default, selected here on CPU): the trainer's weights reach it every
step, and each step's metrics say how much of the context came from its prefix cache."""

import json
import subprocess
import sys

from agentgym_envs.arithmetic import INTERACTION_CONFIG, TOOL_CONFIG


def test_main_ppo_trains_through_the_paged_engine_and_reports_prefix_reuse(tmp_path, tiny_model_dir):
    rows = tmp_path / "rows.parquet"
    subprocess.run([sys.executable, "-m", "agentgym_envs.arithmetic.data", "--out", str(rows), "--rows", "4"], check=True)
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "agentgym.trainer.main_ppo",
        "algorithm.adv_estimator=grpo", "data.train_batch_size=2", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        f"data.train_files={rows}", "data.max_response_length=32", f"actor_rollout_ref.model.path={tiny_model_dir}",
        "actor_rollout_ref.rollout.n=3", "trainer.total_training_steps=2", "trainer.use_ray=false",
        "trainer.device=cpu", f"trainer.default_local_dir={run_dir}", "trainer.logger=[jsonl]",
        f"actor_rollout_ref.rollout.multi_turn.tool_config_path={TOOL_CONFIG}",
        f"actor_rollout_ref.rollout.multi_turn.interaction_config_path={INTERACTION_CONFIG}",
        "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=2", "actor_rollout_ref.rollout.max_num_seqs=16",
        "+actor_rollout_ref.rollout.engine_kwargs.transformers.backend=paged",
        "actor_rollout_ref.actor.optim.lr=0.02",  # a real change of weights, so a missed sync would show in step 2
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in records] == [1, 2]
    for m in records:
        assert m["rollout/engine/context_tokens"] > m["rollout/engine/prefilled_tokens"] > 0
        # Three samples per prompt: the later two find the prompt's full blocks in the cache.
        assert m["rollout/engine/prefix_cache_hit_rate"] > 0.3
        assert m["rollout/engine/generated_tokens"] > 0
        assert m["rollout/logprob_diff/max"] < 1e-3  # fp32 engine and trainer agree on the sampled tokens
