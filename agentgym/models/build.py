"""Write a loadable model directory (config, safetensors weights, tokenizer, chat template) without downloads."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from functools import lru_cache
from importlib import resources
from pathlib import Path

import torch
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from agentgym.models.configs import QWEN25_SHAPES, TINY_SHAPES, qwen25_config, tiny_config
from agentgym.models.tokenizer import ENDOFTEXT, IM_END, train_tokenizer

MODEL_SIZES = tuple(TINY_SHAPES) + tuple(QWEN25_SHAPES)
_COMPLETE_MARKER = ".agentgym-complete"
# Bump when the directory layout changes in a way the source hash below would not notice.
_LAYOUT_VERSION = 1


@lru_cache(maxsize=1)
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """The trained tokenizer, shared by every size (training takes about two seconds, so do it once)."""
    return train_tokenizer()


def _source_digest() -> str:
    """Hash of the code and template that determine the output, so editing them invalidates the cache."""
    digest = hashlib.sha256()
    package = resources.files("agentgym.models")
    for name in ("corpus.py", "tokenizer.py", "configs.py", "build.py", "chat_template.jinja"):
        digest.update(package.joinpath(name).read_bytes())
    return digest.hexdigest()


def _config_for(size: str, tokenizer: PreTrainedTokenizerFast) -> tuple[Qwen2Config, torch.dtype]:
    eos = tokenizer.convert_tokens_to_ids(IM_END)
    pad = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    if size in TINY_SHAPES:
        return tiny_config(size, vocab_size=len(tokenizer), eos_token_id=eos, pad_token_id=pad), torch.float32
    # Real Qwen2.5 shapes (vocab included) with this tokenizer: ids it emits are a subset of the 151936 rows.
    return qwen25_config(size, bos_token_id=None, eos_token_id=eos, pad_token_id=pad), torch.bfloat16


def model_dir_key(size: str, seed: int) -> str:
    payload = json.dumps({"size": size, "seed": seed, "layout": _LAYOUT_VERSION, "source": _source_digest()})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def build_tiny_model(out_dir: str | os.PathLike[str], *, size: str = "tiny", seed: int = 0) -> Path:
    """Build (or reuse) a Qwen2-architecture model directory under `out_dir` and return its path.

    The directory loads with `AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained`.
    Its name carries a hash of the size, the seed and the builder's source, so a second call with the same
    arguments returns at once, and concurrent builders never see a half-written directory (it is renamed
    into place when complete). Sizes: "tiny" (~0.9M params, tests), "small" (~19M, CPU demos), "0.5b" and
    "1.5b" (Qwen2.5 shapes, random weights in bf16, for GPU speed runs).
    """
    if size not in MODEL_SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {list(MODEL_SIZES)}")
    name = f"agentgym-{size}-seed{seed}-{model_dir_key(size, seed)}"
    return build_once(out_dir, name, lambda staging: _write_model(staging, size=size, seed=seed))


def build_once(out_dir: str | os.PathLike[str], name: str, write: Callable[[Path], None]) -> Path:
    """`out_dir/name`, written by `write(staging_dir)` unless a complete copy is there already.

    The directory is written under a temporary name and renamed into place when complete, so concurrent
    builders never see a half-written directory."""
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    target = root / name
    if (target / _COMPLETE_MARKER).exists():
        return target

    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        write(staging)
        (staging / _COMPLETE_MARKER).write_text(target.name)
        try:
            os.rename(staging, target)
        except OSError:
            # Another builder finished first (rename onto a non-empty directory fails); theirs is identical.
            if not (target / _COMPLETE_MARKER).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _write_model(path: Path, *, size: str, seed: int) -> None:
    tokenizer = tiny_tokenizer()
    config, dtype = _config_for(size, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.to(dtype)
    model.generation_config = GenerationConfig(
        eos_token_id=[config.eos_token_id, config.pad_token_id],
        pad_token_id=config.pad_token_id,
        do_sample=True,
        temperature=1.0,
        top_p=1.0,
    )
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    _make_tokenizer_config_portable(path, tokenizer)


def _make_tokenizer_config_portable(path: Path, tokenizer: PreTrainedTokenizerFast) -> None:
    """Name the generic fast-tokenizer class and inline the template, which transformers 4.x and 5.x both read."""
    config_file = path / "tokenizer_config.json"
    data = json.loads(config_file.read_text())
    data["tokenizer_class"] = "PreTrainedTokenizerFast"
    data["chat_template"] = tokenizer.chat_template
    config_file.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
