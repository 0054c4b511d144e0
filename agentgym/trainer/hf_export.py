"""`actor.checkpoint.save_contents: [..., hf_model]`: a checkpoint's policy as a Hugging Face model directory.

`global_step_N/huggingface/` holds `config.json`, the weights as safetensors in bf16 (gathered from every rank),
the tokenizer files, the chat template and the generation config of the initial model: it loads with
`AutoModelForCausalLM.from_pretrained` and serves with SGLang or vLLM (`--model <dir>`) as it is. It is written to a
temporary folder and renamed into place, so a kill mid-export leaves no half model behind.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Mapping

import torch

from agentgym.errors import ConfigError

HF_DIR = "huggingface"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5")
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def export_hf_model(init_path: str | Path, state_dict: Mapping[str, torch.Tensor], out: Path,
                    dtype: torch.dtype = torch.bfloat16) -> Path:
    """Write `state_dict` (Hugging Face names, as `actor_state_dict` returns them) as a model directory at `out`,
    with the architecture, tokenizer and chat template of the model at `init_path`."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    from agentgym.multimodal.processor import VisionProcessor

    init = Path(init_path)
    if not (init / "config.json").is_file():
        raise ConfigError(f"cannot export an HF model: {init} has no config.json to take the architecture from",
                          entry="actor_rollout_ref.model.path",
                          fix="point it at a local model directory, or drop hf_model from "
                              "actor_rollout_ref.actor.checkpoint.save_contents")
    config = AutoConfig.from_pretrained(init)
    auto = AutoModelForImageTextToText if VisionProcessor.is_vision_model(init) else AutoModelForCausalLM
    with torch.device("meta"):
        model = auto.from_config(config, torch_dtype=dtype)
    weights = {k: v.to(dtype) for k, v in state_dict.items()}
    missing, unexpected = model.load_state_dict(weights, strict=False, assign=True)
    # Tied output embeddings may be absent from the state dict (they are the input embeddings).
    missing = [k for k in missing if not _is_tied(model, k)]
    if missing or unexpected:
        raise RuntimeError(f"the trained weights do not fit {type(model).__name__} from {init}: missing "
                           f"{missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    model.config.torch_dtype = dtype
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    for item in init.iterdir():  # tokenizer, chat template, generation and processor configs
        if (item.is_file() and not (tmp / item.name).exists() and not item.name.endswith(_WEIGHT_SUFFIXES)
                and item.name not in _WEIGHT_INDEXES and not item.name.startswith(".")):
            shutil.copy2(item, tmp / item.name)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def _is_tied(model: torch.nn.Module, key: str) -> bool:
    config = model.config
    tied = config.tie_word_embeddings if "tie_word_embeddings" in config.to_dict() else False
    text = config.to_dict().get("text_config") or {}
    return bool(tied or text.get("tie_word_embeddings")) and key.endswith("lm_head.weight")
