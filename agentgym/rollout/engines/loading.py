"""Loading a causal LM directory for an in-process engine, with every eos id it may end on."""

from __future__ import annotations

import threading
from pathlib import Path

import torch

# transformers' loading switches process-wide init contexts (meta device, weight-init skipping): two loads in
# parallel threads corrupt each other, so engines starting together load one at a time.
_LOAD_LOCK = threading.Lock()


def load_causal_lm(path: str | Path, attn_implementation: str = "sdpa") -> tuple[torch.nn.Module, list[int]]:
    """The model (on CPU, as saved) and its eos ids from the generation config, the tokenizer and the config."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer, GenerationConfig

    from agentgym.multimodal.processor import VisionProcessor

    auto = AutoModelForImageTextToText if VisionProcessor.is_vision_model(path) else AutoModelForCausalLM
    with _LOAD_LOCK:
        model = auto.from_pretrained(path, attn_implementation=attn_implementation)
    eos: list[int] = []
    try:
        gen_eos = GenerationConfig.from_pretrained(path).eos_token_id
        eos += gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else []
    except OSError:
        pass
    try:
        tok_eos = AutoTokenizer.from_pretrained(path).eos_token_id
        if tok_eos is not None:
            eos.append(tok_eos)
    except (OSError, ValueError):
        pass
    cfg_eos = getattr(model.config.get_text_config(), "eos_token_id", None)
    if cfg_eos is not None and not eos:
        eos += cfg_eos if isinstance(cfg_eos, list) else [cfg_eos]
    return model, eos
