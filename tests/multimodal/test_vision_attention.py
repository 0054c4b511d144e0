"""The vision tower's varlen attention gives what transformers' SDPA gives, and is really the one that runs."""

import numpy as np
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText

from agentgym.multimodal import vision_attention
from agentgym.multimodal.vision_attention import VISION_ATTENTION, use_vision_attention


def test_the_vision_tower_computes_the_same_through_the_window_boundaries(tiny_vlm_dir, vision_processor, monkeypatch):
    rng = np.random.default_rng(0)
    images = [vision_processor.encode_image(Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)))
              for h, w in ((112, 112), (56, 140))]
    pixels = torch.cat([im.pixel_values for im in images])
    grid = torch.tensor([im.grid_thw for im in images])
    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm_dir).eval()
    with torch.no_grad():
        expected = torch.cat(model.model.get_image_features(pixels, grid, return_dict=True).pooler_output)
    windows = []
    real_loop = vision_attention._window_loop
    monkeypatch.setattr(vision_attention, "_window_loop",
                        lambda q, k, v, bounds, scaling: windows.append(len(bounds) - 1) or real_loop(q, k, v, bounds, scaling))
    assert use_vision_attention(model)
    assert model.model.visual.config._attn_implementation == VISION_ATTENTION
    assert model.config.get_text_config()._attn_implementation != VISION_ATTENTION  # the language model keeps its own
    with torch.no_grad():
        got = torch.cat(model.model.get_image_features(pixels, grid, return_dict=True).pooler_output)
    assert len(windows) == len(model.model.visual.blocks)  # one call per layer, each over every window
    assert max(windows) > 2
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_a_text_model_is_left_alone(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    assert not use_vision_attention(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
