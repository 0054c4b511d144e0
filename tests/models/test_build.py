import json
import os

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2ForCausalLM

from agentgym.models import build_tiny_model, qwen25_config
from agentgym.models.tokenizer import CONTROL_TOKENS, MARKUP_TOKENS


def _param_count(config) -> int:
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    return sum(p.numel() for p in model.parameters())


def test_tiny_model_loads_with_from_pretrained_and_generates(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert model.config.model_type == "qwen2"
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 1.5e6
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.eos_token_id == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")

    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 2?"}], add_generation_prompt=True, tokenize=True, return_dict=False
    )
    out = model.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False, min_new_tokens=6)
    assert out.shape == (1, len(prompt) + 6)
    assert out[0, : len(prompt)].tolist() == prompt


def test_markup_tokens_are_single_ids_and_survive_skip_special_tokens(tiny_tokenizer_loaded):
    tok = tiny_tokenizer_loaded
    for token in CONTROL_TOKENS + MARKUP_TOKENS:
        ids = tok.encode(token, add_special_tokens=False)
        assert len(ids) == 1 and tok.convert_ids_to_tokens(ids[0]) == token
    text = '<|im_start|>assistant\n<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call><|im_end|>'
    assert tok.decode(tok.encode(text, add_special_tokens=False), skip_special_tokens=True) == (
        'assistant\n<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>'
    )


@pytest.mark.parametrize(
    "text",
    ["plain words", "  leading and trailing  \n\n\t", "naïve café ☃ 🙂 中文", '{"a": [1, 2.5e-3, null]}', "x" * 500],
)
def test_tokenizer_round_trips_text(tiny_tokenizer_loaded, text):
    tok = tiny_tokenizer_loaded
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_build_is_cached_by_content_and_seeded(model_cache_dir, tiny_model_dir, tmp_path):
    marker = tiny_model_dir / ".agentgym-complete"
    mtime = os.stat(marker).st_mtime_ns
    assert build_tiny_model(model_cache_dir, size="tiny", seed=0) == tiny_model_dir
    assert os.stat(marker).st_mtime_ns == mtime, "a cached build must not be rewritten"

    same_seed_elsewhere = build_tiny_model(tmp_path, size="tiny", seed=0)
    other_seed = build_tiny_model(tmp_path, size="tiny", seed=1)
    assert other_seed != same_seed_elsewhere
    base = load_file(tiny_model_dir / "model.safetensors")
    again = load_file(same_seed_elsewhere / "model.safetensors")
    other = load_file(other_seed / "model.safetensors")
    assert base.keys() == again.keys() == other.keys()
    assert all(torch.equal(base[k], again[k]) for k in base)
    assert any(not torch.equal(base[k], other[k]) for k in base if base[k].ndim == 2)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging directories must be cleaned up"


@pytest.mark.slow
def test_small_model_size(model_cache_dir):
    path = build_tiny_model(model_cache_dir, size="small")
    config = json.loads((path / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(path)
    assert config["num_hidden_layers"] == 6
    assert 10e6 <= sum(p.numel() for p in model.parameters()) <= 30e6


def test_unknown_size_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown model size 'huge'"):
        build_tiny_model(tmp_path, size="huge")


@pytest.mark.parametrize(("size", "low", "high"), [("0.5b", 0.48e9, 0.51e9), ("1.5b", 1.5e9, 1.6e9)])
def test_qwen25_configs_have_published_shapes(size, low, high):
    config = qwen25_config(size)
    assert config.model_type == "qwen2" and config.vocab_size == 151936 and config.tie_word_embeddings
    # Qwen2.5-0.5B has 494M parameters and Qwen2.5-1.5B 1.54B (tied embeddings counted once).
    assert low <= _param_count(config) <= high
    assert qwen25_config(size, vocab_size=4096).vocab_size == 4096
    with pytest.raises(ValueError, match="unknown Qwen2.5 size"):
        qwen25_config("7b-typo")
