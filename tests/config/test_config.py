from pathlib import Path

import pytest
import yaml

from agentgym.config import AgentGymConfig, dump_config, load_config
from agentgym.errors import ConfigError


def test_verl_command_line_keys_are_accepted(tmp_path: Path):
    cfg = load_config(
        None,
        [
            "algorithm.adv_estimator=grpo",
            "data.train_batch_size=16",
            "actor_rollout_ref.model.path=/models/tiny",
            "actor_rollout_ref.actor.optim.lr=1e-6",
            "actor_rollout_ref.actor.ppo_mini_batch_size=4",
            "actor_rollout_ref.rollout.n=5",
            "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=3",
            "actor_rollout_ref.rollout.multi_turn.tool_config_path=tool_configs/code.yaml",
            "trainer.total_training_steps=20",
            "trainer.n_gpus_per_node=2",
            f"trainer.default_local_dir={tmp_path}",
        ],
    )
    assert cfg.algorithm.adv_estimator == "grpo"
    assert cfg.data.train_batch_size == 16
    assert cfg.actor_rollout_ref.actor.optim.lr == pytest.approx(1e-6)
    assert cfg.actor_rollout_ref.rollout.n == 5
    assert cfg.actor_rollout_ref.rollout.multi_turn.max_assistant_turns == 3
    assert cfg.trainer.total_training_steps == 20
    assert cfg.checkpoint_dir == str(tmp_path)
    assert cfg.world_size == 2
    assert not cfg.use_critic
    assert cfg.actor_rollout_ref.model.path == "/models/tiny"


def test_yaml_then_overrides_take_precedence(tmp_path: Path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"algorithm": {"adv_estimator": "gae", "gamma": 0.9}, "data": {"train_batch_size": 4}}))
    cfg = load_config(path, ["algorithm.gamma=0.5", "actor_rollout_ref.actor.ppo_mini_batch_size=2"])
    assert cfg.algorithm.adv_estimator == "gae" and cfg.algorithm.gamma == 0.5
    assert cfg.use_critic


@pytest.mark.parametrize(
    "override, named, suggestion",
    [
        ("actor_rollout_ref.actor.optim.lrr=1e-5", "actor_rollout_ref.actor.optim.lrr", "actor_rollout_ref.actor.optim.lr"),
        ("trainer.n_gpu_per_node=2", "trainer.n_gpu_per_node", "trainer.n_gpus_per_node"),
        ("algorithm.adv_estimator.x=1", "algorithm.adv_estimator.x", None),
    ],
)
def test_unknown_override_names_key_and_suggests(override, named, suggestion):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert f"'{named}'" in str(info.value)
    if suggestion:
        assert f"'{suggestion}'" in str(info.value)


def test_unknown_yaml_key_names_file_and_key(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("actor_rollout_ref:\n  rollout:\n    multi_turn:\n      max_assistant_turn: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert "actor_rollout_ref.rollout.multi_turn.max_assistant_turn" in text and str(path) in text
    assert "max_assistant_turns" in text


def test_free_form_dicts_accept_any_subkey():
    cfg = load_config(None, ["actor_rollout_ref.model.override_config.attention_dropout=0.1",
                             "+actor_rollout_ref.rollout.engine_kwargs.sglang.urls=[a, b]"])
    assert cfg.actor_rollout_ref.model.override_config == {"attention_dropout": 0.1}
    assert cfg.actor_rollout_ref.rollout.engine_kwargs["sglang"]["urls"] == ["a", "b"]


def test_bad_values_are_config_errors():
    with pytest.raises(ConfigError, match="adv_estimator"):
        load_config(None, ["algorithm.adv_estimator=ppo2"])
    with pytest.raises(ConfigError, match="multiple"):
        load_config(None, ["data.train_batch_size=6", "actor_rollout_ref.actor.ppo_mini_batch_size=4"])
    with pytest.raises(ConfigError, match="no '='"):
        load_config(None, ["data.train_batch_size"])


def test_dump_round_trips(tmp_path: Path):
    cfg = load_config(None, ["algorithm.adv_estimator=rloo", "actor_rollout_ref.actor.clip_ratio_c=null"])
    path = tmp_path / "dump.yaml"
    path.write_text(dump_config(cfg))
    again = load_config(path)
    assert again == cfg
    assert again.actor_rollout_ref.actor.clip_ratio_c is None
    assert isinstance(again, AgentGymConfig)
