"""A vision-language model's processor as the agent loop, the engines and the trainer use it.

It is the model's own tokenizer and image processor (loaded with `from_pretrained` from the model directory, so a
`Qwen/Qwen2.5-VL-*` checkout works unchanged) and the expansion rule of transformers' Qwen2-VL processors: each
`<|image_pad|>` the chat template writes becomes `grid_t * grid_h * grid_w / merge_size**2` pad tokens, one per
merged patch the vision tower emits. Expanding ids (not text) lets the agent loop append a tool's image to a running
conversation token-exactly; a count that disagrees with the images is an error here, before the model's own
"Image features and image tokens do not match".

Nothing is cached across episodes: an image is encoded when it enters an episode and dropped with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from agentgym.multimodal.images import as_png, load_image


@dataclass(frozen=True, eq=False)
class EncodedImage:
    """One image as the model consumes it: its PNG bytes (for storage and SGLang), its flattened patches and
    their (t, h, w) grid in patches, and how many LM tokens it takes."""

    png: bytes
    pixel_values: torch.Tensor
    grid_thw: tuple[int, int, int]
    num_tokens: int


@dataclass(frozen=True, eq=False)
class ImageInputs:
    """The images of one sequence, in the order their pad tokens appear in it."""

    images: tuple[EncodedImage, ...] = ()
    _pixels: list = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def pixel_values(self) -> torch.Tensor:
        return torch.cat([im.pixel_values for im in self.images]) if self.images else torch.zeros(0)

    @property
    def image_grid_thw(self) -> torch.Tensor:
        return torch.tensor([im.grid_thw for im in self.images], dtype=torch.long).reshape(-1, 3)

    @property
    def num_tokens(self) -> int:
        return sum(im.num_tokens for im in self.images)

    def pngs(self) -> list[bytes]:
        return [im.png for im in self.images]


class ImageTokenMismatch(ValueError):
    """The ids hold a different number of image pad tokens than the images need."""


class VisionProcessor:
    """Tokenizer + image processor of a Qwen2-VL-family model."""

    def __init__(self, tokenizer: Any, image_processor: Any, *, image_token: str = "<|image_pad|>"):
        self.tokenizer, self.image_processor = tokenizer, image_processor
        self.image_token = image_token
        token_id = tokenizer.convert_tokens_to_ids(image_token)
        if token_id is None or token_id == getattr(tokenizer, "unk_token_id", None):
            raise ValueError(f"the tokenizer has no {image_token!r} token: this is not a Qwen2-VL-family tokenizer")
        self.image_token_id = int(token_id)
        self.merge_size = int(getattr(image_processor, "merge_size", 2))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "VisionProcessor":
        from transformers import AutoImageProcessor, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
        try:
            image_processor = AutoImageProcessor.from_pretrained(path)
        except (ImportError, ValueError):  # the torchvision backend is missing: the PIL one computes the same
            from transformers import Qwen2VLImageProcessorPil

            image_processor = Qwen2VLImageProcessorPil.from_pretrained(path)
        return cls(tokenizer, image_processor)

    @staticmethod
    def is_vision_model(path: str | Path) -> bool:
        """Whether the model directory holds a vision-language model (its config has a vision tower)."""
        import json

        config = Path(path) / "config.json"
        return config.is_file() and "vision_config" in json.loads(config.read_text())

    def encode_image(self, image: Any) -> EncodedImage:
        png = as_png(image)
        out = self.image_processor(images=[load_image(png)], return_tensors="pt")
        grid = tuple(int(x) for x in out["image_grid_thw"][0])
        return EncodedImage(png, out["pixel_values"], grid, grid[0] * grid[1] * grid[2] // self.merge_size ** 2)

    def expand(self, ids: Sequence[int], images: Sequence[EncodedImage]) -> list[int]:
        """`ids` with the k-th single image pad token repeated as often as image k needs."""
        slots = [i for i, token in enumerate(ids) if token == self.image_token_id]
        if len(slots) != len(images):
            raise ImageTokenMismatch(
                f"the rendered text has {len(slots)} image placeholder(s) ({self.image_token}) but {len(images)} "
                "image(s) were given; every image part of a message renders one placeholder")
        out: list[int] = []
        last = 0
        for slot, image in zip(slots, images):
            out.extend(ids[last:slot])
            out.extend([self.image_token_id] * image.num_tokens)
            last = slot + 1
        out.extend(ids[last:])
        return out

    def image_spans(self, ids: Sequence[int], images: Sequence[EncodedImage], offset: int = 0) -> list[tuple[int, int]]:
        """[start, end) of each image's pad run in already expanded `ids` (plus `offset`)."""
        spans, i = [], 0
        for image in images:
            while i < len(ids) and ids[i] != self.image_token_id:
                i += 1
            run = ids[i:i + image.num_tokens]
            if len(run) != image.num_tokens or any(t != self.image_token_id for t in run):
                raise ImageTokenMismatch(f"image pad run at {i + offset} is shorter than the image's "
                                         f"{image.num_tokens} tokens")
            spans.append((i + offset, i + offset + image.num_tokens))
            i += image.num_tokens
        return spans


def mm_token_type_ids(input_ids: torch.Tensor, image_token_id: int) -> torch.Tensor:
    """transformers' modality ids for `get_rope_index`: 1 on image tokens, 0 elsewhere."""
    return (input_ids == image_token_id).to(torch.int)


def rope_positions(model: torch.nn.Module, input_ids: torch.Tensor, image_grid_thw: torch.Tensor | None,
                   attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, B, L) multimodal rotary positions and the (B, 1) offset of the next text position, the model's way."""
    inner = getattr(model, "model", model)
    image_token_id = model.config.image_token_id
    if image_grid_thw is None or image_grid_thw.numel() == 0:
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        text = (mask.long().cumsum(-1) - 1).clamp(min=0)
        return text[None].expand(3, -1, -1).clone(), torch.zeros(input_ids.shape[0], 1, dtype=torch.long)
    return inner.get_rope_index(input_ids, mm_token_type_ids=mm_token_type_ids(input_ids, image_token_id),
                                image_grid_thw=image_grid_thw, attention_mask=attention_mask)


def load_vision_processor(model_path: str | Path | None) -> VisionProcessor | None:
    """The processor of a vision-language model directory; None for a text-only model (or no path)."""
    if not model_path or not VisionProcessor.is_vision_model(model_path):
        return None
    return VisionProcessor.from_pretrained(model_path)
