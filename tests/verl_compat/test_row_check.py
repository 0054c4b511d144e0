"""The data check: bad rows named before the first step, by the session's own rules; also as `agentgym data
validate`, in main_ppo and in `agentgym rollout`."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agentgym.cli import main as cli_main
from agentgym.config import load_config
from agentgym.rows.check import DataCheckError, Registered, check_rows, require_valid_rows
from agentgym.episode.session import Session
from agentgym.interactions.base import BaseInteraction
from agentgym.tools.base_tool import BaseTool
from agentgym.trainer.main_ppo import run_ppo

from .verl_layout import ANSWER_TOOL_YAML, INTERACTION_YAML, install_ported, verl_rows, write_parquet

REPO = Path(__file__).resolve().parents[2]
TWO_INTERACTIONS = INTERACTION_YAML + """  - name: strict
    class_name: ported_interaction.AnswerFeedbackInteraction
    config: {}
"""


def bad_rows() -> list[dict]:
    rows = verl_rows()
    del rows[0]["prompt"]
    rows[1]["extra_info"]["tools_kwargs"]["calc_gsm8k_rewrd"] = rows[1]["extra_info"]["tools_kwargs"].pop("calc_gsm8k_reward")
    rows[2]["extra_info"]["interaction_kwargs"]["name"] = "tutor"
    rows[3]["prompt"][1]["content"] = "<image> How many apples are in the picture?"
    return rows


def messages(problems):
    return [(p.row, p.severity, p.message) for p in problems]


def test_verls_rows_pass_every_config():
    rows = verl_rows()
    for registered in (Registered.of(["calc_gsm8k_reward"], []), Registered.of([], ["answerfeedback"]),
                       Registered.of(["calc_gsm8k_reward", "scratchpad"], ["answerfeedback"]), Registered.of([], [])):
        assert check_rows(rows, registered) == [], registered


def test_each_bad_row_is_named_with_its_fix():
    found = messages(check_rows(bad_rows(), Registered.of(["calc_gsm8k_reward"], ["answerfeedback"])))
    assert found == [
        (0, "error", "no `prompt` (it has: ability, data_source, extra_info, reward_model)"),
        (1, "error", "extra_info.tools_kwargs names tool `calc_gsm8k_rewrd`, which is not registered "
                     "(registered: calc_gsm8k_reward)"),
        (2, "error", "the row asks for interaction `tutor` but the registered interactions are ['answerfeedback']"),
        (3, "error", "the prompt has 1 `<image>` placeholder(s) but the row has 0 item(s) under `images`"),
    ]


def test_interaction_rule_is_the_sessions():
    """Same verdict as Session for: none registered, one registered, several registered; named or not."""
    row = verl_rows()[0]
    cases = [([], None), (["a"], None), (["a", "b"], None), (["a", "b"], "b"), (["a"], "c"), ([], "c")]
    for names, asked in cases:
        r = copy.deepcopy(row)
        r["extra_info"]["tools_kwargs"] = {}
        if asked:
            r["extra_info"]["interaction_kwargs"]["name"] = asked
        errors = [p for p in check_rows([r], Registered.of([], names)) if p.severity == "error"]
        try:
            Session({}, extra_info=r["extra_info"], interactions={n: BaseInteraction({"name": n}) for n in names})
            session_ok = True
        except ValueError:
            session_ok = False
        assert session_ok == (not errors), (names, asked, errors)
    several = check_rows([row], Registered.of([], ["a", "b"]))
    assert "has no `name`, and several interactions are registered (a, b)" in several[0].message
    ignored = check_rows([{**row, "extra_info": {"interaction_kwargs": {"name": "c"}}}], Registered.of([], []))
    assert [p.severity for p in ignored] == ["warning"] and "runs without one" in ignored[0].message


def test_parquet_null_filler_asks_for_nothing(tmp_path):
    """Rows with and without a tool / an interaction in one parquet file: the file fills the gaps with nulls."""
    from agentgym.rows import read_rows

    with_both, plain = verl_rows()[:2]
    with_both["extra_info"]["interaction_kwargs"]["name"] = "answerfeedback"
    plain["extra_info"]["tools_kwargs"] = {"scratchpad": {"create_kwargs": {"label": "x"}}}
    plain["extra_info"]["interaction_kwargs"] = {}
    rows = read_rows(str(write_parquet([with_both, plain], tmp_path / "mixed.parquet")))
    # The reader drops the nulls Arrow's struct merging filled in (agentgym.rows.parquet), so nothing is asked for.
    assert "calc_gsm8k_reward" not in rows[1]["extra_info"]["tools_kwargs"]
    assert not rows[1]["extra_info"].get("interaction_kwargs")
    assert check_rows(rows, Registered.of(["calc_gsm8k_reward", "scratchpad"], ["answerfeedback"])) == []
    session = Session({"scratchpad": BaseTool({}, _schema("scratchpad"))}, extra_info=rows[1]["extra_info"],
                      interactions={"answerfeedback": BaseInteraction({})})
    assert session.interaction is None


def _schema(name):
    from agentgym.tools.schemas import OpenAIFunctionToolSchema

    return OpenAIFunctionToolSchema.model_validate({"type": "function", "function": {
        "name": name, "description": "d", "parameters": {"type": "object", "properties": {}}}})


def test_malformed_kwargs_and_newer_api_keys():
    row = verl_rows()[0]
    row["extra_info"]["tools_kwargs"]["calc_gsm8k_reward"]["create_kwrgs"] = {}
    row["extra_info"]["tool_selection"] = ["calc_gsm8k_reward", "serch"]
    found = messages(check_rows([row], Registered.of(["calc_gsm8k_reward", "search"], [])))
    assert found == [
        (0, "error", "extra_info.tools_kwargs.calc_gsm8k_reward.create_kwrgs is not a key the tool reads"),
        (0, "error", "extra_info.tool_selection names tool(s) `serch` that are not registered (registered: "
                     "calc_gsm8k_reward, search)"),
    ]
    row["extra_info"]["tool_selection"] = "calc_gsm8k_reward"
    assert messages(check_rows([row], Registered.of(["calc_gsm8k_reward"], [])))[1] == (
        0, "error", "extra_info.tool_selection must be a list of tool names, got 'calc_gsm8k_reward'")
    row["extra_info"]["tool_selection"] = []
    assert messages(check_rows([row], Registered.of(["calc_gsm8k_reward"], [])))[1] == (
        0, "warning", "extra_info.tool_selection is empty, which (as in verl) offers every registered tool")


def test_error_groups_rows_and_says_the_fix():
    rows = verl_rows() * 5
    for row in rows:
        row["extra_info"] = copy.deepcopy(row["extra_info"])
        row["extra_info"]["tools_kwargs"]["search"] = {}
    with pytest.raises(DataCheckError) as info:
        require_valid_rows(rows, Registered.of(["calc_gsm8k_reward"], []), source="train.parquet")
    text = str(info.value)
    assert text.startswith("20 row(s) would fail in the rollout:\nerror: 20 row(s) of train.parquet "
                           "(row 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 10 more): extra_info.tools_kwargs names tool `search`")
    assert "Fix: register it in multi_turn.tool_config_path or fix the name in the row." in text


@pytest.fixture
def run_files(tmp_path, monkeypatch):
    install_ported(tmp_path, monkeypatch)
    (tmp_path / "tools.yaml").write_text(ANSWER_TOOL_YAML)
    (tmp_path / "interaction.yaml").write_text(TWO_INTERACTIONS)
    config = {"actor_rollout_ref": {"rollout": {"multi_turn": {"tool_config_path": str(tmp_path / "tools.yaml"),
                                                               "interaction_config_path": str(tmp_path / "interaction.yaml")}}}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def test_data_validate_command(run_files, capsys):
    good = verl_rows()
    for row in good:
        row["extra_info"]["interaction_kwargs"]["name"] = "strict"
    write_parquet(good, run_files / "good.parquet")
    assert cli_main(["data", "validate", str(run_files / "good.parquet"), "--config", str(run_files / "run.yaml")]) == 0
    assert "OK" in capsys.readouterr().out

    write_parquet(verl_rows(), run_files / "bad.parquet")  # no `name`, two interactions registered
    code = cli_main(["data", "validate", str(run_files / "bad.parquet"), "--config", str(run_files / "run.yaml")])
    out = " ".join(capsys.readouterr().out.split())
    assert code == 1
    assert "error: 4 row(s) of " in out and "(row 0, 1, 2, 3): the row's extra_info.interaction_kwargs has no `name`" in out
    assert "Fix: set extra_info.interaction_kwargs.name to one of answerfeedback, strict" in out
    assert "FAILED" in out and "4 of 4 row(s) would fail" in out


def test_main_ppo_stops_before_building_the_rollout(run_files, tiny_model_dir):
    built = []

    def make_rollout(config):
        built.append(config)
        raise AssertionError("the rollout must not be built for bad rows")

    config = load_config(str(run_files / "run.yaml"), ["data.train_batch_size=2", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
                                                        "trainer.device=cpu", f"actor_rollout_ref.model.path={tiny_model_dir}"])
    with pytest.raises(DataCheckError, match=r"row 0, 1, 2, 3\): the row's extra_info.interaction_kwargs has no `name`"):
        run_ppo(config, make_rollout=make_rollout, dataset=verl_rows())
    assert built == []


def test_rollout_command_names_bad_rows_before_loading_a_model(run_files, tiny_model_dir):
    rows = run_files / "rows.parquet"
    write_parquet(bad_rows(), rows)
    cmd = [sys.executable, "-m", "agentgym", "rollout", "--config", str(run_files / "run.yaml"),
           f"data.train_files={rows}", f"actor_rollout_ref.model.path={tiny_model_dir}"]
    env = {"PYTHONPATH": f"{run_files}:{REPO}", "PATH": "/usr/bin:/bin", "HOME": str(run_files)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "row(s) would fail in the rollout" in done.stderr and "calc_gsm8k_rewrd" in done.stderr
