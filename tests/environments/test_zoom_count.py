"""The zoom-count environment: valid VLM rows, ground truth that matches the pixels, a region the zoom tool can
crop, and nothing in the text that tells the count (a text-only model is at chance)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from agentgym.rows.check import Registered, require_valid_rows
from agentgym.multimodal.images import load_image
from agentgym_envs.zoom_count.data import ZoomCountTaskConfig, make_rows


def _red_squares(image) -> int:
    red = (np.asarray(image)[:, :, 0] > 150) & (np.asarray(image)[:, :, 1] < 80)
    seen = np.zeros_like(red)
    count = 0
    for y, x in zip(*np.nonzero(red)):
        if seen[y, x]:
            continue
        count += 1
        stack = [(y, x)]
        while stack:
            a, b = stack.pop()
            if 0 <= a < red.shape[0] and 0 <= b < red.shape[1] and red[a, b] and not seen[a, b]:
                seen[a, b] = True
                stack += [(a + 1, b), (a - 1, b), (a, b + 1), (a, b - 1)]
    return count


def test_rows_are_valid_and_their_counts_match_the_pixels():
    rows = make_rows(ZoomCountTaskConfig(num_rows=16, seed=3))
    require_valid_rows(rows, Registered.of(["image_zoom_in"], None))
    for row in rows:
        image = load_image(row["images"][0])
        assert _red_squares(image) == int(row["reward_model"]["ground_truth"])
        x1, y1, x2, y2 = row["extra_info"]["region"]
        assert _red_squares(image.crop((x1, y1, x2, y2))) == _red_squares(image)  # the region holds them all
        objects = row["extra_info"]["scene"]["objects"]
        assert sum(o["color"] == "red" for o in objects) == int(row["reward_model"]["ground_truth"])


def test_text_alone_is_at_chance():
    rows = make_rows(ZoomCountTaskConfig(num_rows=64))
    assert len({str(r["prompt"]) for r in rows}) == 1  # every row asks the same words
    counts = Counter(r["reward_model"]["ground_truth"] for r in rows)
    assert max(counts.values()) / len(rows) == 0.25  # the best a text-only guess can score


def test_the_teachers_zoom_box_holds_the_shapes_on_a_coarse_lattice():
    from agentgym_envs.zoom_count.data import GRID, SIZE, ZOOM, box_holds, demonstration, zoom_box

    rows = make_rows(ZoomCountTaskConfig(num_rows=200, seed=5))
    corners = set()
    for row in rows:
        region = row["extra_info"]["region"]
        box = zoom_box(region)
        assert box_holds(box, region) and 0 <= box[0] and box[2] <= SIZE and 0 <= box[1] and box[3] <= SIZE
        assert box[0] % GRID == box[1] % GRID == 0 and box[2] - box[0] == box[3] - box[1] == ZOOM
        assert str(box) in demonstration(row)[0]["content"]
        corners.add(tuple(box[:2]))
    assert len(corners) == 16  # every lattice box is used: the corner is not a constant the model could memorise
