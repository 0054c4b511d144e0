"""Counting small red squares in a generated picture, where the whole-image view is too coarse and zooming helps.

Each image is a 224x224 canvas with 1-4 small red squares and blue circle distractors, all inside one randomly
placed 96x96 region. The tiny VLM sees a whole image as 4x4 merged patches (28x28 pixels each), too coarse to
count 7-pixel squares; `image_zoom_in` on the region returns it at the same token budget, four times sharper.
Every row has the same question text, so a text-only model can do no better than the most frequent count
(chance, 25%). Rows are verl's VLM layout: `<image>` in the prompt, PNG bytes under `images`, the rule ground truth,
the zoom tool's image in `tools_kwargs`, and the scene's objects for visual-consistency rewards.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw

SYSTEM_PROMPT = ("Count the red squares. The picture is small: call image_zoom_in on the box that holds the "
                 "shapes, then give the count as \\boxed{n}.")
QUESTION = "<image>How many red squares are in the picture?"
SIZE, REGION, SQUARE = 224, 96, 7
# The teacher's zoom boxes: ZOOM-pixel squares on a GRID-pixel lattice. One of them always holds the region, and
# their 16 corners are few and round enough for a tiny model to learn to name from the coarse whole-image view.
ZOOM, GRID = 128, 32


@dataclass(frozen=True)
class ZoomCountTaskConfig:
    num_rows: int = 64
    seed: int = 0
    split: str = "train"
    max_count: int = 4
    system_prompt: str = SYSTEM_PROMPT


def _free_spot(rng: random.Random, taken: list[tuple[int, int]], x0: int, y0: int) -> tuple[int, int]:
    for _ in range(200):
        x, y = x0 + rng.randint(4, REGION - SQUARE - 4), y0 + rng.randint(4, REGION - SQUARE - 4)
        if all(abs(x - a) > SQUARE + 4 or abs(y - b) > SQUARE + 4 for a, b in taken):
            return x, y
    raise RuntimeError("no free spot left in the region")


def make_scene(rng: random.Random, count: int) -> tuple[bytes, dict[str, Any], list[int]]:
    """PNG bytes, the scene's objects, and the region's box [x1, y1, x2, y2]."""
    x0, y0 = rng.randint(0, SIZE - REGION), rng.randint(0, SIZE - REGION)
    image = Image.new("RGB", (SIZE, SIZE), "white")
    draw = ImageDraw.Draw(image)
    taken: list[tuple[int, int]] = []
    objects = []
    for _ in range(count):
        x, y = _free_spot(rng, taken, x0, y0)
        taken.append((x, y))
        draw.rectangle([x, y, x + SQUARE - 1, y + SQUARE - 1], fill=(220, 0, 0))
        objects.append({"shape": "square", "color": "red"})
    for _ in range(rng.randint(1, 3)):
        x, y = _free_spot(rng, taken, x0, y0)
        taken.append((x, y))
        draw.ellipse([x, y, x + SQUARE - 1, y + SQUARE - 1], fill=(0, 0, 220))
        objects.append({"shape": "circle", "color": "blue"})
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue(), {"objects": objects}, [x0, y0, x0 + REGION, y0 + REGION]


def make_rows(cfg: ZoomCountTaskConfig) -> list[dict[str, Any]]:
    rng = random.Random(f"zoom_count-{cfg.split}-{cfg.seed}")
    rows = []
    for index in range(cfg.num_rows):
        count = index % cfg.max_count + 1  # balanced: every count equally often
        png, scene, box = make_scene(rng, count)
        rows.append({
            "data_source": "agentgym/zoom_count",
            "prompt": [{"role": "system", "content": cfg.system_prompt}, {"role": "user", "content": QUESTION}],
            "images": [png],
            "ability": "visual_counting",
            "reward_model": {"style": "rule", "ground_truth": str(count)},
            "extra_info": {"split": cfg.split, "index": index, "scene": scene, "region": box,
                           "tools_kwargs": {"image_zoom_in": {"create_kwargs": {"image": png}}}},
        })
    rng.shuffle(rows)
    return rows


def zoom_box(region: list[int]) -> list[int]:
    """The teacher's box around `region`: the ZOOM square on the GRID lattice that holds it."""
    x0, y0 = (min(v // GRID * GRID, SIZE - ZOOM) for v in region[:2])
    return [x0, y0, x0 + ZOOM, y0 + ZOOM]


def box_holds(box: list[float], region: list[int]) -> bool:
    return box[0] <= region[0] and box[1] <= region[1] and box[2] >= region[2] and box[3] >= region[3]


def demonstration(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The turns of a correct episode (zoom on a lattice box that holds the region, then the count), for SFT."""
    import json

    box = zoom_box(row["extra_info"]["region"])
    call = {"name": "image_zoom_in", "arguments": {"bbox_2d": box}}
    return [{"role": "assistant", "content": "<tool_call>\n" + json.dumps(call) + "\n</tool_call>"},
            {"role": "tool", "content": None},  # the zoomed image: produced by the tool when replayed
            {"role": "assistant", "content": f"\\boxed{{{row['reward_model']['ground_truth']}}}"}]


def main(argv: list[str] | None = None) -> None:
    """python -m agentgym_envs.zoom_count.data --out rows.parquet [--rows N] [--seed S] [--split train]"""
    from agentgym_envs.data_cli import task_data_cli

    task_data_cli(make_rows, ZoomCountTaskConfig, prog="python -m agentgym_envs.zoom_count.data",
                  description="write zoom-count rows (images as PNG bytes) in verl's VLM dataset layout", argv=argv,
                  suffixes=(".parquet",), why=" (rows hold image bytes, which JSON lines cannot)")


if __name__ == "__main__":
    main()
