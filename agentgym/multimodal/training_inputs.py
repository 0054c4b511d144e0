"""What the trainer feeds a vision-language model besides token ids: the pixels of every image a sequence's tokens
hold, and rotary positions computed by the model's own `get_rope_index` for padded batches and packed rows alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from agentgym.trajectory import Trajectory


def trajectory_pixels(traj: Trajectory, processor: Any) -> dict[str, torch.Tensor] | None:
    """Pixels of the images whose tokens the trajectory holds, in token order (None for a text-only one)."""
    if not traj.image_spans:
        return None
    if processor is None:
        raise ValueError(f"trajectory {traj.uid} holds images but the trainer has no image processor: train "
                         "vision-language trajectories with a vision-language model (its directory has "
                         "preprocessor_config.json)")
    encoded = [processor.encode_image(traj.images[span.image]) for span in sorted(traj.image_spans, key=lambda s: s.start)]
    ids = list(traj.prompt_ids) + list(traj.response_ids)
    for span, image in zip(sorted(traj.image_spans, key=lambda s: s.start), encoded):
        if span.end - span.start != image.num_tokens:
            raise ValueError(f"trajectory {traj.uid}: image {span.image} takes {span.end - span.start} tokens but "
                             f"encodes to {image.num_tokens}; the rollout used another image processor setting")
    if sum(1 for t in ids if t == processor.image_token_id) != sum(im.num_tokens for im in encoded):
        raise ValueError(f"trajectory {traj.uid}: its image tokens and recorded image spans disagree")
    return {"pixel_values": torch.cat([im.pixel_values for im in encoded]),
            "image_grid_thw": torch.tensor([im.grid_thw for im in encoded], dtype=torch.long)}


def pack_pixels(samples: Sequence[dict[str, torch.Tensor] | None]) -> dict[str, torch.Tensor] | None:
    present = [s for s in samples if s is not None]
    if not present:
        return None
    return {"pixel_values": torch.cat([s["pixel_values"] for s in present]),
            "image_grid_thw": torch.cat([s["image_grid_thw"] for s in present]),
            "images_per_seq": torch.tensor([0 if s is None else len(s["image_grid_thw"]) for s in samples])}


def vision_model_inputs(model: torch.nn.Module, input_ids: torch.Tensor, position_ids: torch.Tensor,
                        attention_mask: torch.Tensor | None, multimodal: dict[str, torch.Tensor]) -> dict[str, Any]:
    """pixel_values, image_grid_thw and position ids for one micro-batch.

    Padded (b, L): (3, b, L) rotary positions from `get_rope_index` with the attention mask. Packed (1, T): each
    sequence's positions computed alone and concatenated, with the restarting text positions as a fourth row
    (transformers' layout for packed Qwen2-VL rows: it builds the per-sequence mask from that row).
    """
    from agentgym.multimodal.processor import rope_positions

    grid, per_seq = multimodal["image_grid_thw"], multimodal["images_per_seq"].tolist()
    inputs = {"pixel_values": multimodal["pixel_values"], "image_grid_thw": grid}
    if attention_mask is not None:
        rope, _ = rope_positions(model, input_ids, grid, attention_mask)
        inputs["position_ids"] = rope
        return inputs
    starts = (position_ids[0] == 0).nonzero().flatten().tolist() + [input_ids.shape[1]]
    pieces, first = [], 0
    for seq, count in enumerate(per_seq):
        a, b = starts[seq], starts[seq + 1]
        rope, _ = rope_positions(model, input_ids[:, a:b], grid[first:first + count] if count else None)
        pieces.append(rope.to(input_ids.device))
        first += count
    inputs["position_ids"] = torch.cat([position_ids[None], torch.cat(pieces, dim=-1)], dim=0)
    return inputs
