"""The images of one running episode: encoded once when they enter (prompt or tool result), kept in order, and
written into the trajectory with the positions of their tokens. Dropped with the episode: nothing here outlives it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agentgym.multimodal.images import as_png, data_url
from agentgym.multimodal.processor import EncodedImage, ImageInputs, VisionProcessor
from agentgym.trajectory import ImageSpan, Trajectory

Message = dict[str, Any]


class TextOnlyModelError(ValueError):
    """Images reached an episode whose model has no vision tower (the model would never see them)."""


def image_parts(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [part for m in messages if isinstance(m.get("content"), list)
            for part in m["content"] if isinstance(part, dict) and part.get("type") == "image"]


class EpisodeImages:
    def __init__(self, processor: VisionProcessor | None, traj: Trajectory):
        self.processor, self.traj = processor, traj
        self.encoded: list[EncodedImage] = []

    def _require_processor(self, what: str) -> VisionProcessor:
        if self.processor is None:
            raise TextOnlyModelError(
                f"{what}, but the model is text-only (no image processor in its directory): the images would be "
                "dropped unseen. Use a vision-language model (e.g. Qwen2.5-VL) or rows and tools without images")
        return self.processor

    def add_prompt(self, prompt_ids: list[int], messages: list[Message], images: Sequence[Any]) -> list[int]:
        """Encode the row's images (once) and expand their placeholders in the prompt's ids."""
        parts = image_parts(messages)
        if not parts and not images:
            return prompt_ids
        processor = self._require_processor(f"the row has {len(images)} image(s)")
        if len(parts) != len(images):
            raise ValueError(f"the prompt has {len(parts)} `<image>` placeholder(s) but the row has {len(images)} "
                             "image(s); put one `<image>` per image in the prompt text, in order")
        new = [processor.encode_image(image) for image in images]
        ids = processor.expand(prompt_ids, new)
        self._record(ids, new, parts, offset=0, turn=None)
        return ids

    def add_turn(self, delta_ids: list[int], new_messages: list[Message], offset: int, turn: int, *,
                 room: int | None = None) -> list[int]:
        """Encode the images of the environment's new messages (a tool's `ToolResponse.image`) and expand the
        delta's placeholders; `offset` is where the delta starts in prompt + response. An expanded delta of `room`
        tokens or more will not be appended (the response budget ends the episode): its images are not recorded
        as seen (`finish` stores them without spans)."""
        parts = [p for p in image_parts(new_messages) if "image" in p]
        if not parts:
            return delta_ids
        processor = self._require_processor(f"a tool returned {len(parts)} image(s)")
        new = [processor.encode_image(part["image"]) for part in parts]
        ids = processor.expand(delta_ids, new)
        if room is not None and len(ids) >= room:
            return ids
        self._record(ids, new, parts, offset=offset, turn=turn)
        return ids

    def _record(self, ids: list[int], new: list[EncodedImage], parts: list[dict[str, Any]], *, offset: int,
                turn: int | None) -> None:
        assert self.processor is not None
        for (start, end), image, part in zip(self.processor.image_spans(ids, new, offset), new, parts):
            index = len(self.traj.images)
            self.traj.images.append(data_url(image.png))
            self.traj.image_spans.append(ImageSpan(index, start, end, turn))
            part.pop("image", None)
            part["image_index"] = index
        self.encoded.extend(new)

    def first_placeholder(self, generated: list[int]) -> int | None:
        """Where the model itself sampled an image or video placeholder token (a weakly trained model can), or
        None. Such a token has no image behind it, so the trainer and the next prefill could not match it."""
        if self.processor is None:
            return None
        banned = {self.processor.image_token_id}
        video = self.processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
        if isinstance(video, int) and video != getattr(self.processor.tokenizer, "unk_token_id", None):
            banned.add(video)
        return next((i for i, token in enumerate(generated) if token in banned), None)

    def inputs(self) -> ImageInputs | None:
        return ImageInputs(tuple(self.encoded)) if self.encoded else None

    def finish(self, messages: list[Message]) -> None:
        """Images in messages that never reached the model (the episode ended first) are stored, without spans,
        so the transcript is complete and JSON-storable."""
        for part in image_parts(messages):
            if "image" in part:
                index = len(self.traj.images)
                self.traj.images.append(data_url(as_png(part.pop("image"))))
                part["image_index"] = index
