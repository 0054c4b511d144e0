"""`image_zoom_in`: crop a box of the episode's image and show it to the model as a new image (DeepEyes-style).

The image comes from the row's `extra_info.tools_kwargs.image_zoom_in.create_kwargs.image` (bytes, a path or a
`{"bytes", "path"}` dict, as verl's zoom tool takes it). Boxes are `bbox_2d: [x1, y1, x2, y2]` in the original
image's pixels; a box that is inverted, outside the image or too small is answered with a message saying what
was wrong and what a valid box looks like, so the model can try again.
"""

from __future__ import annotations

from typing import Any, Optional

from PIL import Image

from agentgym.multimodal.images import load_image, png_bytes
from agentgym.tools.base_tool import BaseTool
from agentgym.tools.schemas import OpenAIFunctionToolSchema, ToolResponse

DEFAULT_SCHEMA = {
    "type": "function",
    "function": {
        "name": "image_zoom_in",
        "description": "Zoom in on a region of the image: returns the crop of the box as a new image.",
        "parameters": {
            "type": "object",
            "properties": {
                "bbox_2d": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4,
                            "description": "The box [x1, y1, x2, y2] in the image's pixels, top-left to bottom-right."},
                "label": {"type": "string", "description": "What is in the box (optional)."},
            },
            "required": ["bbox_2d"],
        },
    },
}


class ImageZoomInTool(BaseTool):
    """config: `min_box_size` (pixels per side, default 8), `upscale_to` (the crop's shorter side is enlarged to
    at least this many pixels, default 56, so a small box still fills the vision tower's minimum)."""

    def __init__(self, config: dict, tool_schema: OpenAIFunctionToolSchema | None = None):
        super().__init__(config, tool_schema or OpenAIFunctionToolSchema.model_validate(DEFAULT_SCHEMA))
        self.min_box_size = int(self.config.get("min_box_size", 8))
        self.upscale_to = int(self.config.get("upscale_to", 56))
        self._images: dict[str, Image.Image] = {}

    async def create(self, instance_id: Optional[str] = None, image: Any = None, **kwargs: Any) -> tuple[str, ToolResponse]:
        instance_id, response = await super().create(instance_id)
        if image is None:
            raise ValueError("image_zoom_in needs the episode's image: set extra_info.tools_kwargs.image_zoom_in."
                             "create_kwargs.image in the row (bytes, a path or {bytes, path})")
        self._images[instance_id] = load_image(image)
        return instance_id, response

    def check_box(self, box: list[float], width: int, height: int) -> str | None:
        """None for a usable box, else the message the model reads."""
        x1, y1, x2, y2 = box
        valid = (f"give bbox_2d as [x1, y1, x2, y2] with 0 <= x1 < x2 <= {width} and 0 <= y1 < y2 <= {height}, "
                 f"at least {self.min_box_size} pixels wide and high")
        if x1 >= x2 or y1 >= y2:
            return f"Error: bbox_2d {box} is empty or inverted (x2 must exceed x1 and y2 exceed y1); {valid}."
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            return f"Error: bbox_2d {box} reaches outside the {width}x{height} image; {valid}."
        if x2 - x1 < self.min_box_size or y2 - y1 < self.min_box_size:
            return f"Error: bbox_2d {box} is smaller than {self.min_box_size} pixels on a side; {valid}."
        return None

    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs: Any) -> tuple[ToolResponse, float, dict]:
        image = self._images[instance_id]
        box = [float(v) for v in parameters["bbox_2d"]]
        problem = self.check_box(box, *image.size)
        if problem:
            return ToolResponse(text=problem), 0.0, {"bad_box": True}
        x1, y1, x2, y2 = (round(v) for v in box)
        crop = image.crop((x1, y1, x2, y2))
        short = min(crop.size)
        if short < self.upscale_to:
            scale = self.upscale_to / short
            crop = crop.resize((round(crop.width * scale), round(crop.height * scale)), Image.Resampling.BICUBIC)
        label = parameters.get("label")
        text = f"Zoomed in on [{x1}, {y1}, {x2}, {y2}]" + (f" ({label})" if label else "") + "."
        return ToolResponse(image=[png_bytes(crop)], text=text), 0.0, {"bad_box": False, "box_area": (x2 - x1) * (y2 - y1)}

    async def release(self, instance_id: str, **kwargs: Any) -> None:
        self._images.pop(instance_id, None)
