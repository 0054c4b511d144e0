"""What the tiny VLM (`tiny-vl`) learns to see in a few minutes: supervised probes, one per picture kind.

Each probe trains a fresh `build_tiny_vlm` model on `picture -> \\boxed{answer}` (one chat turn, loss on the answer,
AdamW, batch 32) and prints held-out accuracy as it goes (4 classes, chance 25 %). It explains the VLM quickstart's
task choice (benchmarks/learning.md, "VLM quickstart"): the model learns what fills a good share of the picture,
while counting small objects or finding where a colour is does not emerge at this size in minutes.

    python benchmarks/vlm_perception.py [--probes quarter_colour,whole_quarter] [--steps 150] [--device cpu]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentgym.models.vlm import build_tiny_vlm  # noqa: E402
from agentgym.multimodal.processor import VisionProcessor, rope_positions  # noqa: E402
from agentgym_envs.zoom_color.data import BACKGROUND, COLOURS, QUARTERS, make_scene, quarter_box  # noqa: E402
from agentgym_envs.zoom_count.data import make_scene as count_scene, zoom_box  # noqa: E402

NAMES = list(COLOURS)


def square_picture(rng: random.Random, size: int, square: int) -> tuple[Image.Image, str]:
    """One square of a random colour at a random place on a `size` canvas of the processor's mean colour."""
    colour = rng.choice(NAMES)
    image = Image.new("RGB", (size, size), BACKGROUND)
    x, y = rng.randint(0, size - square), rng.randint(0, size - square)
    ImageDraw.Draw(image).rectangle([x, y, x + square - 1, y + square - 1], fill=COLOURS[colour])
    return image, colour


def _png(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def zoom_count_crop(rng: random.Random) -> tuple[Image.Image, str]:
    """zoom_count's teacher crop (128 px, 1-4 red 7-px squares and blue circles): how many red squares."""
    count = rng.randint(1, 4)
    png, _, region = count_scene(rng, count)
    return _png(png).crop(tuple(zoom_box(region))), str(count)


def quarter_colour(rng: random.Random) -> tuple[Image.Image, str]:
    """zoom_color's teacher crop (one 112-px quarter): the colour of its 48-px square."""
    png, _, _, colours = make_scene(rng)
    quarter = rng.choice(QUARTERS)
    return _png(png).crop(tuple(quarter_box(quarter))), colours[quarter]


def whole_quarter(rng: random.Random) -> tuple[Image.Image, str]:
    """zoom_color's whole picture: which quarter holds the red square (what answering without the zoom needs)."""
    png, _, _, colours = make_scene(rng)
    return _png(png), str(1 + QUARTERS.index(next(q for q, c in colours.items() if c == "red")))


def square_probe(size: int, square: int) -> Callable[[random.Random], tuple[Image.Image, str]]:
    def picture(rng: random.Random) -> tuple[Image.Image, str]:
        return square_picture(rng, size, square)

    picture.__doc__ = f"the colour of one {square}-px square on a {size}-px picture"
    return picture


PROBES: dict[str, Callable[[random.Random], tuple[Image.Image, str]]] = {
    "solid": square_probe(112, 112),
    "square_64_in_128": square_probe(128, 64),
    "square_32_in_128": square_probe(128, 32),
    "square_7_in_128": square_probe(128, 7),
    "quarter_colour": quarter_colour,
    "whole_quarter": whole_quarter,
    "zoom_count_crop": zoom_count_crop,
}


def run_probe(name: str, args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    path = build_tiny_vlm(args.models, seed=0)
    processor = VisionProcessor.from_pretrained(path)
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).to(args.device)
    tokenizer = processor.tokenizer
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the picture?"}]}]
    prompt = list(tokenizer.apply_chat_template(chat, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"])
    picture = PROBES[name]

    def batch(rng: random.Random, size: int):
        items = [picture(rng) for _ in range(size)]
        answers = [tokenizer.encode(f"\\boxed{{{label}}}<|im_end|>") for _, label in items]
        encoded = [processor.encode_image(image) for image, _ in items]
        rows = [processor.expand(prompt, [im]) + answer for im, answer in zip(encoded, answers)]
        width = max(map(len, rows))
        ids = torch.tensor([row + [0] * (width - len(row)) for row in rows])
        grid = torch.tensor([im.grid_thw for im in encoded])
        positions, _ = rope_positions(model, ids, grid)
        labels = torch.full_like(ids, -100)
        for i, (row, answer) in enumerate(zip(rows, answers)):
            labels[i, len(row) - len(answer):len(row)] = torch.tensor(answer)
        return dict(input_ids=ids.to(args.device), pixel_values=torch.cat([im.pixel_values for im in encoded]).to(args.device),
                    image_grid_thw=grid.to(args.device), position_ids=positions.to(args.device)), labels.to(args.device)

    def accuracy(held_out) -> float:
        right = total = 0
        with torch.no_grad():
            for inputs, labels in held_out:
                predicted = model(**inputs).logits[:, :-1].argmax(-1)
                target = labels[:, 1:]
                answered = target != -100
                right += int(((predicted == target) | ~answered).all(-1).sum())
                total += len(target)
        return right / total

    held_out = [batch(random.Random(10_000 + i), 64) for i in range(2)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    rng, curve, start = random.Random(1), [], time.perf_counter()
    for step in range(1, args.steps + 1):
        inputs, labels = batch(rng, 32)
        logits = model(**inputs).logits[:, :-1].float()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % args.every == 0 or step == args.steps:
            curve.append({"step": step, "loss": round(loss.item(), 4), "held_out_accuracy": accuracy(held_out)})
    return {"probe": name, "what": (picture.__doc__ or name).strip(), "curve": curve,
            "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--probes", default=",".join(PROBES), help=f"comma-separated, from {sorted(PROBES)}")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default="runs/models")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.probes.split(",")
    for name in names:
        if name not in PROBES:
            parser.error(f"unknown probe {name!r}; choose from {sorted(PROBES)}")
    for name in names:
        print(json.dumps(run_probe(name, args)), flush=True)


if __name__ == "__main__":
    main()
