"""The zoom-colour environment: valid VLM rows whose ground truth matches the pixels, a teacher zoom that shows
the named square, and nothing in the text that tells the colour (a text-only model is at chance)."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from agentgym.rows.check import Registered, require_valid_rows
from agentgym.multimodal.images import load_image
from agentgym_envs.zoom_color.data import (BACKGROUND, COLOURS, QUARTERS, ZoomColorTaskConfig, demonstration,
                                          make_rows, quarter_box)


def _colour_at(image, box) -> str:
    """The named colour nearest to the mean of the box's non-background pixels."""
    pixels = np.asarray(image.crop(tuple(box))).reshape(-1, 3).astype(float)
    shape = pixels[np.abs(pixels - BACKGROUND).sum(1) > 60]
    assert len(shape), f"no square in {box}"
    mean = shape.mean(0)
    return min(COLOURS, key=lambda name: np.abs(np.array(COLOURS[name]) - mean).sum())


def test_rows_are_valid_and_the_truth_is_in_the_named_quarter():
    rows = make_rows(ZoomColorTaskConfig(num_rows=16, seed=3))
    require_valid_rows(rows, Registered.of(["image_zoom_in"], None))
    for row in rows:
        image = load_image(row["images"][0])
        quarter, truth = row["extra_info"]["quarter"], row["reward_model"]["ground_truth"]
        assert quarter in row["prompt"][-1]["content"]
        assert _colour_at(image, row["extra_info"]["region"]) == truth
        assert _colour_at(image, quarter_box(quarter)) == truth  # the teacher's zoom shows it
        assert sorted(_colour_at(image, quarter_box(q)) for q in QUARTERS) == sorted(COLOURS)  # one of each colour
        assert sorted(o["color"] for o in row["extra_info"]["scene"]["objects"]) == sorted(COLOURS)


def test_text_alone_is_at_chance():
    rows = make_rows(ZoomColorTaskConfig(num_rows=800, seed=1))
    assert Counter(r["reward_model"]["ground_truth"] for r in rows) == {c: 200 for c in COLOURS}
    by_question: dict[str, Counter] = defaultdict(Counter)
    for row in rows:
        by_question[row["prompt"][-1]["content"]][row["reward_model"]["ground_truth"]] += 1
    assert len(by_question) == len(QUARTERS)  # the words only name the quarter
    best = sum(max(answers.values()) for answers in by_question.values()) / len(rows)
    assert best < 0.32  # the best text-only policy: the most frequent colour per question, ~25 %


def test_demonstrations_zoom_on_the_named_quarter_or_answer_at_once():
    row = make_rows(ZoomColorTaskConfig(num_rows=4, seed=2))[0]
    call, tool, answer = demonstration(row)
    assert str(quarter_box(row["extra_info"]["quarter"])) in call["content"] and tool["role"] == "tool"
    assert answer["content"] == "\\boxed{%s}" % row["reward_model"]["ground_truth"]
    assert demonstration(row, direct=True) == [answer]
