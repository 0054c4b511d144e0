"""Each environment's train.yaml: it loads, its tools and teacher build, its data command writes rows the trainer
reads, and the header's commands agree with the config; one real main_ppo step on code_arith's config."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agentgym.config import load_config
from agentgym.interactions.registry import load_interactions
from agentgym.tools.registry import build_tools, load_tool_specs
from agentgym.rows import PromptBatches, read_rows

REPO = Path(__file__).resolve().parents[2]
ENVS = ["arithmetic", "code_arith", "codegen"]


def train_yaml(env: str) -> Path:
    return REPO / "agentgym_envs" / env / "train.yaml"


def header_commands(env: str) -> dict[str, str]:
    text = train_yaml(env).read_text()
    data = re.search(r"^#\s+1\. data:\s+(.*)$", text, re.M).group(1)
    train = re.search(r"^#\s+2\. train:\s+(.*)$", text, re.M).group(1)
    return {"data": data.strip(), "train": train.strip()}


@pytest.mark.parametrize("env", ENVS)
def test_train_yaml_loads_and_its_environment_builds(env):
    cfg = load_config(train_yaml(env))
    mt = cfg.actor_rollout_ref.rollout.multi_turn
    assert cfg.algorithm.adv_estimator == "grpo" and cfg.trainer.device == "cpu"
    assert cfg.actor_rollout_ref.rollout.n > 1 and cfg.actor_rollout_ref.model.path is None
    # repo-relative paths: main_ppo opens them from the working directory, so they must exist from the repo root
    for path in (mt.tool_config_path, mt.interaction_config_path):
        assert not Path(path).is_absolute() and (REPO / path).is_file(), path
    tools = build_tools(load_tool_specs(REPO / mt.tool_config_path))
    interactions = load_interactions(REPO / mt.interaction_config_path)
    assert tools and interactions
    expected_tool = "calculator" if env == "arithmetic" else "code_interpreter"
    assert set(tools) == {expected_tool}

    commands = header_commands(env)
    folder = Path(cfg.data.train_files).parent
    assert commands["data"].startswith(f"mkdir -p {folder} && python -m agentgym_envs.{env}.data --out {cfg.data.train_files} ")
    assert commands["train"].startswith(f"python -m agentgym.trainer.main_ppo agentgym_envs/{env}/train.yaml ")
    assert "actor_rollout_ref.model.path=" in commands["train"]


@pytest.mark.parametrize("env", ENVS)
def test_data_command_writes_rows_the_config_reads(env, tmp_path):
    import importlib

    cfg_file = train_yaml(env)
    suffix = Path(load_config(cfg_file).data.train_files).suffix
    out = tmp_path / f"train{suffix}"
    importlib.import_module(f"agentgym_envs.{env}.data").main(["--out", str(out), "--rows", "8", "--seed", "3"])

    cfg = load_config(cfg_file, [f"data.train_files={out}"])
    rows = read_rows(cfg.data.train_files)
    assert len(rows) == 8
    PromptBatches(rows, cfg.data.train_batch_size, seed=cfg.data.seed).next_batch()
    teacher_names = {entry["name"] for entry in
                     yaml.safe_load((REPO / cfg.actor_rollout_ref.rollout.multi_turn.interaction_config_path).read_text())["interaction"]}
    for row in rows:
        assert [m["role"] for m in row["prompt"]] == ["system", "user"]
        assert row["extra_info"]["interaction_kwargs"]["name"] in teacher_names
        assert row["reward_model"]["ground_truth"] not in (None, "", [])
    if env == "code_arith":
        assert "code interpreter" in rows[0]["prompt"][0]["content"]


def test_shared_writer_creates_the_folder(tmp_path):
    from agentgym_envs.code_arith.data import main

    main(["--out", str(tmp_path / "data" / "code_arith" / "train.parquet"), "--rows", "2"])
    assert len(read_rows(str(tmp_path / "data" / "code_arith" / "train.parquet"))) == 2


def test_code_arith_rows_are_arithmetics_tasks_with_its_own_prompt(tmp_path):
    from agentgym_envs.arithmetic.data import main as arithmetic_main
    from agentgym_envs.code_arith.data import main as code_arith_main

    arithmetic_main(["--out", str(tmp_path / "a.jsonl"), "--rows", "4"])
    code_arith_main(["--out", str(tmp_path / "c.jsonl"), "--rows", "4"])
    a, c = (read_rows(str(tmp_path / name)) for name in ("a.jsonl", "c.jsonl"))
    assert [r["prompt"][1] for r in a] == [r["prompt"][1] for r in c]
    assert a[0]["prompt"][0] != c[0]["prompt"][0]


def test_codegen_data_refuses_parquet(tmp_path):
    from agentgym_envs.codegen.data import main

    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "rows.parquet")])
    assert not (tmp_path / "rows.parquet").exists()


def test_code_arith_tool_of_the_train_yaml_runs_code_in_the_sandbox():
    """A random tiny model rarely calls the tool in the step below, so call it once here (embedded server)."""
    import asyncio

    from agentgym.tools.sandbox_fusion import aclose_http_sessions
    from agentgym_envs.code_arith import code_call

    cfg = load_config(train_yaml("code_arith"))
    [tool] = build_tools(load_tool_specs(REPO / cfg.actor_rollout_ref.rollout.multi_turn.tool_config_path)).values()

    async def run():
        try:
            response, _, _ = await tool.execute("train-config-test", code_call("739*89-5883")["arguments"])
            return response.text
        finally:
            await aclose_http_sessions()

    assert "59888" in asyncio.run(run())


def test_code_arith_train_yaml_runs_one_main_ppo_step(tmp_path, tiny_model_dir):
    """The README's two commands, from the repo root, with only sizes overridden (embedded sandbox, real tools)."""
    rows = tmp_path / "train.parquet"
    subprocess.run([sys.executable, "-m", "agentgym_envs.code_arith.data", "--out", str(rows), "--rows", "4"],
                   cwd=REPO, check=True, capture_output=True)
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "agentgym.trainer.main_ppo", "agentgym_envs/code_arith/train.yaml",
        f"actor_rollout_ref.model.path={tiny_model_dir}", f"data.train_files={rows}",
        "data.train_batch_size=2", "actor_rollout_ref.actor.ppo_mini_batch_size=2", "actor_rollout_ref.rollout.n=2",
        "data.max_response_length=32", "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=2",
        "trainer.total_training_steps=1", "trainer.use_ray=false", "trainer.save_freq=-1",
        "trainer.logger=[jsonl]", f"trainer.default_local_dir={run_dir}",
    ]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    [metrics] = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert metrics["step"] == 1 and "actor/grad_norm" in json.dumps(metrics)
