"""The tiny Qwen2.5-VL: real transformers classes, loaded from a directory, image tokens expanded exactly."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoTokenizer, Qwen2_5_VLForConditionalGeneration

from agentgym.models.chat import chat_ids, chat_text
from agentgym.multimodal.processor import ImageTokenMismatch, VisionProcessor, rope_positions


def test_directory_loads_with_from_pretrained_as_qwen25_vl(tiny_vlm_dir):
    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm_dir)
    assert isinstance(model, Qwen2_5_VLForConditionalGeneration)
    assert VisionProcessor.is_vision_model(tiny_vlm_dir)
    tok = AutoTokenizer.from_pretrained(tiny_vlm_dir)
    assert tok.convert_tokens_to_ids("<|image_pad|>") == model.config.image_token_id


def test_template_renders_image_parts_with_vision_tokens(vision_processor):
    messages = [{"role": "user", "content": [{"type": "text", "text": "what is "}, {"type": "image"}]},
                {"role": "assistant", "content": "zoom"},
                {"role": "tool", "content": [{"type": "image"}, {"type": "text", "text": "crop"}]}]
    text = chat_text(vision_processor.tokenizer, messages)
    assert "what is <|vision_start|><|image_pad|><|vision_end|><|im_end|>" in text
    assert "<tool_response>\n<|vision_start|><|image_pad|><|vision_end|>crop\n</tool_response>" in text


def test_expanded_ids_feed_the_model_and_a_wrong_count_is_named(tiny_vlm_dir, vision_processor):
    vp = vision_processor
    images = [vp.encode_image(Image.new("RGB", (200, 150), "red")), vp.encode_image(Image.new("RGB", (40, 40), "blue"))]
    assert [im.grid_thw for im in images] == [(1, 6, 8), (1, 4, 4)]  # resized into [4, 16] merged patches
    assert [im.num_tokens for im in images] == [12, 4]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "and"}, {"type": "image"}]}]
    ids = vp.expand(chat_ids(vp.tokenizer, messages, add_generation_prompt=True), images)
    assert ids.count(vp.image_token_id) == 16
    spans = vp.image_spans(ids, images)
    assert [e - s for s, e in spans] == [12, 4]
    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm_dir).eval()
    x = torch.tensor([ids])
    grid = torch.tensor([im.grid_thw for im in images])
    positions, delta = rope_positions(model, x, grid)
    assert positions.shape == (3, 1, len(ids)) and int(delta) < 0  # a 6x8 grid spans 4 positions, not 12
    pixels = torch.cat([im.pixel_values for im in images])
    logits = model(input_ids=x, pixel_values=pixels, image_grid_thw=grid, position_ids=positions).logits
    assert logits.shape == (1, len(ids), len(vp.tokenizer))
    with pytest.raises(ImageTokenMismatch, match="1 image placeholder"):
        vp.expand(chat_ids(vp.tokenizer, messages[:1] and [{"role": "user", "content": [{"type": "image"}]}]), images)
