"""Tiny Qwen2.5-VL models built locally: the real transformers architecture (vision tower + language model), the
real Qwen2-VL image processor, and the agentgym BPE tokenizer with Qwen's vision tokens, written as a model
directory that `from_pretrained` loads like a `Qwen/Qwen2.5-VL-*` checkout.

The processor side is loaded as its parts (tokenizer + image processor, `agentgym.multimodal.processor`):
transformers' `Qwen2_5_VLProcessor` cannot be constructed without torchvision (its video processor needs it), and
the CPU build of torch here has no matching torchvision. The directory still holds everything that class reads.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from transformers import AddedToken, GenerationConfig, PreTrainedTokenizerFast

from agentgym.models.build import build_once, tiny_tokenizer
from agentgym.models.configs import TINY_SHAPES
from agentgym.models.tokenizer import ENDOFTEXT, IM_END

VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD = "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"
VISION_TOKENS = (VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)

# Vision towers: patch 14, 2x2 merge (one LM token per 28x28 pixels), as every Qwen2.5-VL checkout.
VLM_SHAPES: dict[str, dict[str, Any]] = {
    # ~1M parameters. Images are resized to 4..16 LM tokens (56x56..112x112 pixels): a whole scene is coarse,
    # a zoomed crop is sharp, which is what makes a zoom tool worth calling.
    "tiny-vl": dict(
        text=dict(TINY_SHAPES["mini"]), mrope_section=[4, 6, 6],
        vision=dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, window_size=56,
                    fullatt_block_indexes=[1]),
        min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16),
}
# Published shapes of Qwen2.5-VL-3B-Instruct (config.json), for random-init speed runs.
QWEN25_VL_3B: dict[str, Any] = dict(
    text=dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
              num_key_value_heads=2, vocab_size=151936, max_position_embeddings=128000, tie_word_embeddings=True),
    mrope_section=[16, 24, 24],
    vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, window_size=112,
                fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2),
    min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 1280)


def vlm_chat_template() -> str:
    return resources.files("agentgym.models").joinpath("vlm_chat_template.jinja").read_text(encoding="utf-8")


def vlm_tokenizer() -> PreTrainedTokenizerFast:
    """The text models' tokenizer plus Qwen's four vision tokens (fresh ids at the end) and the VLM template."""
    tokenizer = copy.deepcopy(tiny_tokenizer())
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in VISION_TOKENS], special_tokens=True)
    tokenizer.chat_template = vlm_chat_template()
    return tokenizer


def qwen25_vl_config(shape: dict[str, Any], *, vocab_size: int | None = None, token_ids: dict[str, int] | None = None,
                     **text_overrides: Any):
    from transformers import Qwen2_5_VLConfig

    text = dict(shape["text"], rms_norm_eps=1e-6, **text_overrides)
    if vocab_size is not None:
        text["vocab_size"] = vocab_size
    text.setdefault("max_position_embeddings", 8192)
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": shape["mrope_section"]}
    vision = dict(shape["vision"], out_hidden_size=text["hidden_size"], patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2)
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision,
                            tie_word_embeddings=text.get("tie_word_embeddings", True), **(token_ids or {}))


def _digest(size: str, seed: int) -> str:
    digest = hashlib.sha256(json.dumps({"size": size, "seed": seed}).encode())
    package = resources.files("agentgym.models")
    for name in ("corpus.py", "tokenizer.py", "configs.py", "vlm.py", "vlm_chat_template.jinja"):
        digest.update(package.joinpath(name).read_bytes())
    return digest.hexdigest()[:16]


def build_tiny_vlm(out_dir: str | os.PathLike[str], *, size: str = "tiny-vl", seed: int = 0) -> Path:
    """Build (or reuse) a tiny Qwen2.5-VL model directory under `out_dir` and return its path.

    Loads with `Qwen2_5_VLForConditionalGeneration.from_pretrained` (or `AutoModelForImageTextToText`),
    `AutoTokenizer.from_pretrained` and the Qwen2-VL image processor's `from_pretrained`. Cached by a hash of the
    size, seed and builder source; written to a staging directory and renamed into place.
    """
    if size not in VLM_SHAPES:
        raise ValueError(f"unknown VLM size {size!r}; choose one of {sorted(VLM_SHAPES)}")
    name = f"agentgym-{size}-seed{seed}-{_digest(size, seed)}"
    return build_once(out_dir, name, lambda staging: _write_vlm(staging, VLM_SHAPES[size], seed))


def _write_vlm(path: Path, shape: dict[str, Any], seed: int) -> None:
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    tokenizer = vlm_tokenizer()
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in (
        ("image_token_id", IMAGE_PAD), ("video_token_id", VIDEO_PAD), ("vision_start_token_id", VISION_START),
        ("vision_end_token_id", VISION_END))}
    eos, pad = tokenizer.convert_tokens_to_ids(IM_END), tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    config = qwen25_vl_config(shape, vocab_size=len(tokenizer), token_ids=ids, eos_token_id=eos, pad_token_id=pad,
                              bos_token_id=None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config = GenerationConfig(eos_token_id=[eos, pad], pad_token_id=pad, do_sample=True,
                                               temperature=1.0, top_p=1.0)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    config_file = path / "tokenizer_config.json"
    data = json.loads(config_file.read_text())
    data["tokenizer_class"] = "PreTrainedTokenizerFast"
    data["chat_template"] = tokenizer.chat_template
    config_file.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    image_processor = Qwen2VLImageProcessorPil(min_pixels=shape["min_pixels"], max_pixels=shape["max_pixels"])
    image_processor.save_pretrained(path)
    (path / "chat_template.jinja").write_text(tokenizer.chat_template)
