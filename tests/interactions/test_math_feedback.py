"""The math-feedback interaction through its YAML registration and a Session."""

from pathlib import Path

import pytest

from agentgym.episode.session import Session
from agentgym.errors import ConfigError
from agentgym.interactions.registry import load_interactions

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "agentgym_envs/arithmetic/interaction.yaml"


async def test_wrong_then_right_gives_decayed_reward():
    interactions = load_interactions(CONFIG)
    extra = {"interaction_kwargs": {"name": "math_feedback", "ground_truth": "1234"}}
    async with Session({}, extra_info=extra, interactions=interactions) as session:
        messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "I think \\boxed{1200}"}]
        first = await session.user_turn(messages)
        assert (first.should_terminate, first.reward) == (False, 0.0)
        assert first.content.startswith("Your answer (1200) is wrong. Check your work and try again (2 attempt(s) left).")
        messages += [{"role": "user", "content": first.content}, {"role": "assistant", "content": "So \\boxed{1,234}"}]
        second = await session.user_turn(messages)
        assert (second.should_terminate, second.content, second.reward) == (True, "Correct!", 0.5)
        assert (await session.scores()).interaction_score == 0.5


async def test_attempts_run_out():
    interactions = load_interactions(CONFIG)
    extra = {"interaction_kwargs": {"name": "math_feedback", "ground_truth": "5"}}
    async with Session({}, extra_info=extra, interactions=interactions) as session:
        turns = [await session.user_turn([{"role": "assistant", "content": "no idea"}]) for _ in range(3)]
        assert [t.should_terminate for t in turns] == [False, False, True]
        assert turns[-1].content == "Your answer (no answer) is wrong. No attempts left."
        assert (await session.scores()).interaction_score == 0.0


def test_interaction_yaml_errors(tmp_path):
    path = tmp_path / "i.yaml"
    path.write_text("interaction:\n  - name: a\n    class_name: agentgym.interactions.base.BaseInteraction\n"
                    "  - name: a\n    class_name: agentgym.interactions.base.BaseInteraction\n")
    with pytest.raises(ConfigError) as err:
        load_interactions(path)
    assert str(err.value) == f"file {path}, entry interaction[1] (a): interaction name `a` is used twice. Fix: give each interaction its own `name`."
    path.write_text("interaction:\n  - class_name: agentgym.tools.calculator.CalculatorTool\n")
    with pytest.raises(ConfigError, match=r"entry interaction\[0\] \(calculatortool\): `agentgym.tools.calculator.CalculatorTool` is not a subclass of agentgym.interactions.base.BaseInteraction"):
        load_interactions(path)


async def test_an_expression_that_evaluates_to_the_answer_is_not_the_answer():
    """The arithmetic teacher asks for the number: a policy on SmolLM2 learnt to box the question itself, which
    math-verify evaluates and accepts. Without `number_only` (other tasks) the expression still counts."""
    extra = {"interaction_kwargs": {"name": "math_feedback", "ground_truth": "7379"}}
    boxed_question = [{"role": "user", "content": "What is 656 * 22 - 7053?"},
                      {"role": "assistant", "content": "\\boxed{656 * 22 - 7053}"}]
    async with Session({}, extra_info=extra, interactions=load_interactions(CONFIG)) as session:
        turn = await session.user_turn(boxed_question)
        assert (turn.should_terminate, turn.reward) == (False, 0.0)
        assert turn.content.startswith("Your answer (656 * 22 - 7053) is not a number. Give the number itself")
        messages = boxed_question + [{"role": "user", "content": turn.content},
                                     {"role": "assistant", "content": "\\boxed{7{,}379}"}]
        second = await session.user_turn(messages)
        assert (second.should_terminate, second.content, second.reward) == (True, "Correct!", 0.5)
    lenient = load_interactions(CONFIG)
    lenient["math_feedback"].number_only = False
    async with Session({}, extra_info=extra, interactions=lenient) as session:
        turn = await session.user_turn(boxed_question)
        assert (turn.should_terminate, turn.reward) == (True, 1.0)
