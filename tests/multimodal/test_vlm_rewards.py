"""VLM rewards: rule, visual consistency against a generated scene, and the weighted mix from reward_kwargs."""

import pytest

from agentgym.rewards.vlm import compute_score, register_scorer, rule_score, visual_consistency

SCENE = {"scene": {"objects": [{"shape": "square", "color": "red"}] * 3 + [{"shape": "circle", "color": "blue"}]}}


def test_rule_modes():
    assert rule_score("so \\boxed{3}", "3") == 1.0 and rule_score("\\boxed{4}", "3") == 0.0
    assert rule_score("\\boxed{Red}", "red", mode="string") == 1.0
    assert rule_score("I see 3 red squares", r"\b3\b", mode="regex") == 1.0
    with pytest.raises(ValueError, match="unknown rule mode"):
        rule_score("x", "y", mode="fuzzy")


def test_visual_consistency_checks_colours_shapes_and_counts():
    assert visual_consistency("There are 3 red squares and one blue circle.", None, SCENE) == 1.0
    assert visual_consistency("There are 3 green squares.", None, SCENE) == pytest.approx(1 / 3)
    assert visual_consistency("I see two triangles.", None, SCENE) == 0.0
    assert visual_consistency("\\boxed{3}", None, SCENE) == 1.0
    with pytest.raises(ValueError, match="extra_info.scene.objects"):
        visual_consistency("3 red squares", None, {})


def test_weighted_mix_and_a_registered_component():
    components = [{"name": "rule", "weight": 0.7}, {"name": "visual_consistency", "weight": 0.3}]
    out = compute_score("zoom_count", "3 red triangles, \\boxed{3}", "3", SCENE, components=components)
    assert out["rule"] == 1.0 and out["visual_consistency"] == pytest.approx(1 / 3)
    assert out["score"] == pytest.approx(0.7 + 0.3 / 3)
    register_scorer("always_half", lambda s, g, e, **k: 0.5)
    assert compute_score("x", "", "3", SCENE, components=[{"name": "always_half", "weight": 2}])["score"] == 1.0
    with pytest.raises(ValueError, match="unknown reward component"):
        compute_score("x", "", "3", SCENE, components=[{"name": "judge"}])


def test_boxed_mode_pays_only_a_final_boxed_answer():
    """The zoom quickstart's GRPO learnt to write `\\box_, 1}` to every picture: the numeric mode's last-number
    fallback paid it whenever the count was 1. The boxed mode pays only a boxed count."""
    from agentgym.rewards.vlm import rule_score

    assert rule_score(r"\box_, 1}", "1") == 1.0  # the fallback
    assert rule_score(r"\box_, 1}", "1", mode="boxed") == 0.0
    assert rule_score(r"I count \boxed{3}", "3", mode="boxed") == 1.0
    assert rule_score(r"\boxed{2} no, \boxed{3}", "2", mode="boxed") == 0.0
