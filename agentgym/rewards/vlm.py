"""Rewards for vision-language tasks, composable from YAML (`custom_reward_function.reward_kwargs`).

`compute_score` is verl's signature. `reward_kwargs.components` lists weighted parts, each a registered scorer:

    custom_reward_function:
      path: agentgym/rewards/vlm.py
      name: compute_score
      reward_kwargs:
        components:
          - {name: rule, weight: 0.7, mode: numeric}        # or mode: string | regex
          - {name: visual_consistency, weight: 0.3}

Without `components` the score is the rule score alone. `visual_consistency` needs the scene's ground truth,
`extra_info.scene: {objects: [{shape, color}, ...]}` (generated tasks know it): an answer that names shapes,
colours or counts that are not in the image scores lower. A model-based judge registers with `register_scorer`
under its own name and mixes the same way.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from agentgym.answers.numeric import answers_match, extract_answer

Scorer = Callable[..., float]
_SCORERS: dict[str, Scorer] = {}

COLOURS = ("red", "green", "blue", "yellow", "black", "white", "orange", "purple", "gray", "pink", "brown")
SHAPES = ("square", "circle", "triangle", "star", "cross", "dot")
_NUMBER_WORDS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten".split())}


def register_scorer(name: str, fn: Scorer) -> None:
    """Make `fn(solution_str, ground_truth, extra_info, **kwargs) -> float` available as a component."""
    _SCORERS[name] = fn


def rule_score(solution_str: str, ground_truth: Any, extra_info: Mapping[str, Any] | None = None, *,
               mode: str = "numeric", case_sensitive: bool = False) -> float:
    """1.0 when the answer matches: `numeric` (the final \\boxed{} or last number, exact), `boxed` (numeric, but only
    a final \\boxed{} counts: no last-number fallback, which a policy under RL learns to game by writing any text
    that ends in a likely number), `string` (the boxed answer or whole text, trimmed), `regex` (ground_truth is a
    pattern searched in the text)."""
    if mode == "numeric":
        return float(answers_match(extract_answer(solution_str), str(ground_truth)))
    if mode == "boxed":
        boxed = re.findall(r"\\boxed\{([^{}]*)\}", solution_str)
        return float(bool(boxed) and answers_match(boxed[-1].strip(), str(ground_truth)))
    if mode == "string":
        boxed = re.findall(r"\\boxed\{([^{}]*)\}", solution_str)
        got = (boxed[-1] if boxed else solution_str).strip()
        want = str(ground_truth).strip()
        return float(got == want if case_sensitive else got.lower() == want.lower())
    if mode == "regex":
        return float(re.search(str(ground_truth), solution_str, 0 if case_sensitive else re.IGNORECASE) is not None)
    raise ValueError(f"unknown rule mode {mode!r}; use numeric, boxed, string or regex")


def _mentions(text: str) -> tuple[set[str], set[str], list[tuple[int, str | None, str]]]:
    words = re.findall(r"[a-z]+|\d+", text.lower())
    colours = {w for w in words if w in COLOURS}
    shapes = {w.rstrip("s") for w in words if w.rstrip("s") in SHAPES}
    counts = []
    for i, word in enumerate(words):
        n = int(word) if word.isdigit() else _NUMBER_WORDS.get(word)
        if n is None:
            continue
        follow = words[i + 1:i + 3]
        colour = next((w for w in follow if w in COLOURS), None)
        shape = next((w.rstrip("s") for w in follow if w.rstrip("s") in SHAPES), None)
        if shape:
            counts.append((n, colour, shape))
    return colours, shapes, counts


def visual_consistency(solution_str: str, ground_truth: Any = None, extra_info: Mapping[str, Any] | None = None,
                       **_: Any) -> float:
    """Share of the answer's claims about the image that hold: each colour and shape it names must be in the
    scene, and each "N [colour] shape(s)" must be the scene's count. An answer that claims nothing scores 1.0."""
    scene = (extra_info or {}).get("scene") or {}
    objects = scene.get("objects") or []
    if not objects:
        raise ValueError("visual_consistency needs extra_info.scene.objects ([{shape, color}, ...]) in the row")
    present_colours = {o["color"] for o in objects}
    present_shapes = {o["shape"] for o in objects}
    counted = Counter((o["color"], o["shape"]) for o in objects)
    by_shape = Counter(o["shape"] for o in objects)
    colours, shapes, counts = _mentions(solution_str)
    claims = [c in present_colours for c in colours] + [s in present_shapes for s in shapes]
    for n, colour, shape in counts:
        claims.append(n == (counted[(colour, shape)] if colour else by_shape[shape]))
    return sum(claims) / len(claims) if claims else 1.0


register_scorer("rule", rule_score)
register_scorer("visual_consistency", visual_consistency)


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: Mapping[str, Any] | None = None,
                  components: list[Mapping[str, Any]] | None = None, **rule_kwargs: Any) -> dict[str, float]:
    """verl's reward signature: the weighted sum of the components, each also reported under its name."""
    parts = components or [{"name": "rule", "weight": 1.0, **rule_kwargs}]
    total, out = 0.0, {}
    for part in parts:
        spec = dict(part)
        name, weight = spec.pop("name"), float(spec.pop("weight", 1.0))
        if name not in _SCORERS:
            raise ValueError(f"unknown reward component {name!r}; registered: {sorted(_SCORERS)}")
        value = float(_SCORERS[name](solution_str, ground_truth, extra_info, **spec))
        out[name] = value
        total += weight * value
    return {"score": total, **out}
