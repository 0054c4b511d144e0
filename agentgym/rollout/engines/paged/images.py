"""Images in the paged engine (Qwen2.5-VL family): what a sequence with images carries through the scheduler.

Three things differ from a text sequence:
- **Cache keys.** Every pad token of every image has the same id, so two different images of one size would hash
  to the same prefix blocks. The scheduler's copy of the prompt therefore holds a per-image content id (negative,
  from the image's PNG bytes) at each pad position: equal images share blocks (the samples of a GRPO group, the
  next turn of a conversation), different ones never do. The runner feeds the real pad id.
- **Embeddings.** At a pad position the model's input is the vision tower's output, not the token's embedding.
  The tower runs once per sequence, when a prefill chunk first reaches one of its pads that is not cached, and
  its output stays with the sequence (a preempted sequence recomputes from it) until the sequence ends.
- **Rotary positions.** The model's 3-D positions (`get_rope_index`) for the prompt; generated tokens continue
  at `index + delta`, the same in all three sections, which is plain rope shifted by `delta`.
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch


def content_id(png: bytes) -> int:
    """A negative id for an image's pad tokens in cache keys (real token ids are >= 0)."""
    return -1 - int.from_bytes(hashlib.blake2b(png, digest_size=7).digest(), "little")


@dataclass(eq=False)
class SequenceImages:
    """The images of one request and what the engine derives from them."""

    inputs: Any  # agentgym.multimodal.processor.ImageInputs
    pad_positions: list[int]  # prompt indices of the pad tokens, in order (the k-th gets embedding row k)
    rope: torch.Tensor  # [3, prompt_len] long, on the CPU
    delta: int  # the rotary offset of every token after the prompt
    embeds: torch.Tensor | None = field(default=None, repr=False)  # [pads, hidden] on the device, once computed

    @property
    def prompt_len(self) -> int:
        return self.rope.shape[1]

    def pads_in(self, start: int, end: int) -> tuple[int, int]:
        """[first, last) embedding rows of the pads at prompt positions [start, end)."""
        return bisect.bisect_left(self.pad_positions, start), bisect.bisect_left(self.pad_positions, end)

    def rope_positions(self, start: int, end: int) -> list[list[int]]:
        """The three rotary position rows of tokens [start, end)."""
        prompt_end = min(end, self.prompt_len)
        rows = self.rope[:, start:prompt_end].tolist() if start < prompt_end else [[], [], []]
        tail = [i + self.delta for i in range(max(start, self.prompt_len), end)]
        return [row + tail for row in rows]


def prepare(model: torch.nn.Module, prompt_ids: list[int], images: Any,
            image_token_id: int) -> tuple[list[int], SequenceImages]:
    """The scheduler's copy of the prompt (pads replaced by content ids) and the sequence's image state."""
    from agentgym.multimodal.processor import rope_positions

    pads = [i for i, t in enumerate(prompt_ids) if t == image_token_id]
    keys = list(prompt_ids)
    at = 0
    for image in images.images:
        cid = content_id(image.png)
        for p in pads[at : at + image.num_tokens]:
            keys[p] = cid
        at += image.num_tokens
    ids = torch.tensor([prompt_ids], dtype=torch.long)
    rope, delta = rope_positions(model, ids, images.image_grid_thw)
    return keys, SequenceImages(images, pads, rope[:, 0].clone(), int(delta.reshape(-1)[0]))
