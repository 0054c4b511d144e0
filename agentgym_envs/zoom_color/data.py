"""Reading the colour of one square in a picture of four, where only a zoomed view is readable by a tiny model.

Each image is a 224x224 canvas cut into four quarters; every quarter holds one 48-pixel square, and the four squares
wear the four colours in a random order. The question names a quarter ("the top-left quarter"). In the whole-image
view (16 LM tokens) each square fills about one token and all four colours are always present, so the answer needs
spatial attention a tiny model does not learn in minutes. `image_zoom_in` on the named quarter returns a view where
that square fills about a quarter of the picture, which the same model learns to read in ~50 steps
(benchmarks/learning.md, "VLM quickstart"). The background is the image processor's mean colour, so after
normalisation it is ~0 and the squares are the only signal.

Colours are balanced over the rows and independent of the question, so a text-only model is at chance (25%).
Rows are verl's VLM layout: `<image>` in the prompt, PNG bytes under `images`, the rule ground truth, the zoom tool's
image in `tools_kwargs`, and the scene's objects for visual-consistency rewards.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {"red": (220, 0, 0), "blue": (0, 0, 220), "green": (0, 200, 0),
                                            "yellow": (230, 230, 0)}
QUARTERS = ("top-left", "top-right", "bottom-left", "bottom-right")
SIZE, HALF, SQUARE = 224, 112, 48
BACKGROUND = (123, 117, 104)  # CLIP's image mean: ~0 after the Qwen2-VL processor's normalisation
SYSTEM_PROMPT = ("Each quarter of the picture holds one coloured square, too small to read from the whole picture. "
                 "Call image_zoom_in on the quarter the question names, then answer with the square's colour as "
                 "\\boxed{colour}.")


@dataclass(frozen=True)
class ZoomColorTaskConfig:
    num_rows: int = 64
    seed: int = 0
    split: str = "train"
    system_prompt: str = SYSTEM_PROMPT


def quarter_box(quarter: str) -> list[int]:
    """The quarter's box [x1, y1, x2, y2]: the zoom the teacher makes."""
    index = QUARTERS.index(quarter)
    x0, y0 = (index % 2) * HALF, (index // 2) * HALF
    return [x0, y0, x0 + HALF, y0 + HALF]


def make_scene(rng: random.Random) -> tuple[bytes, dict[str, Any], dict[str, list[int]], dict[str, str]]:
    """PNG bytes, the scene's objects, each quarter's square box, and each quarter's colour."""
    image = Image.new("RGB", (SIZE, SIZE), BACKGROUND)
    draw = ImageDraw.Draw(image)
    colours = list(COLOURS)
    rng.shuffle(colours)
    boxes, objects = {}, []
    for quarter, colour in zip(QUARTERS, colours):
        qx, qy, _, _ = quarter_box(quarter)
        x, y = qx + rng.randint(4, HALF - SQUARE - 4), qy + rng.randint(4, HALF - SQUARE - 4)
        draw.rectangle([x, y, x + SQUARE - 1, y + SQUARE - 1], fill=COLOURS[colour])
        boxes[quarter] = [x, y, x + SQUARE, y + SQUARE]
        objects.append({"shape": "square", "color": colour})
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue(), {"objects": objects}, boxes, dict(zip(QUARTERS, colours))


def question(quarter: str) -> str:
    return f"<image>What colour is the square in the {quarter} quarter of the picture?"


def make_rows(cfg: ZoomColorTaskConfig) -> list[dict[str, Any]]:
    rng = random.Random(f"zoom_color-{cfg.split}-{cfg.seed}")
    rows = []
    for index in range(cfg.num_rows):
        png, scene, boxes, colours = make_scene(rng)
        # Balanced answers: row i asks about whichever quarter holds colour i mod 4.
        want = list(COLOURS)[index % len(COLOURS)]
        quarter = next(q for q, c in colours.items() if c == want)
        rows.append({
            "data_source": "agentgym/zoom_color",
            "prompt": [{"role": "system", "content": cfg.system_prompt},
                       {"role": "user", "content": question(quarter)}],
            "images": [png],
            "ability": "visual_reading",
            "reward_model": {"style": "rule", "ground_truth": want},
            "extra_info": {"split": cfg.split, "index": index, "scene": scene, "quarter": quarter,
                           "region": boxes[quarter],
                           "tools_kwargs": {"image_zoom_in": {"create_kwargs": {"image": png}}}},
        })
    rng.shuffle(rows)
    return rows


def demonstration(row: dict[str, Any], *, direct: bool = False) -> list[dict[str, Any]]:
    """The turns of a correct episode (zoom on the named quarter, then the colour), for SFT. `direct` answers at
    once without zooming: the warm-up mixes some in, and RL has to learn that they do not pay."""
    answer = {"role": "assistant", "content": f"\\boxed{{{row['reward_model']['ground_truth']}}}"}
    if direct:
        return [answer]
    call = {"name": "image_zoom_in", "arguments": {"bbox_2d": quarter_box(row["extra_info"]["quarter"])}}
    return [{"role": "assistant", "content": "<tool_call>\n" + json.dumps(call) + "\n</tool_call>"},
            {"role": "tool", "content": None},  # the zoomed image: produced by the tool when replayed
            answer]


def main(argv: list[str] | None = None) -> None:
    """python -m agentgym_envs.zoom_color.data --out rows.parquet [--rows N] [--seed S] [--split train]"""
    from agentgym_envs.data_cli import task_data_cli

    task_data_cli(make_rows, ZoomColorTaskConfig, prog="python -m agentgym_envs.zoom_color.data",
                  description="write zoom-colour rows (images as PNG bytes) in verl's VLM dataset layout", argv=argv,
                  suffixes=(".parquet",), why=" (rows hold image bytes, which JSON lines cannot)")


if __name__ == "__main__":
    main()
