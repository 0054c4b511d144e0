"""A byte-level BPE tokenizer trained here, with Qwen2.5's chat markup tokens and a tool-aware chat template."""

from __future__ import annotations

from importlib import resources

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from agentgym.models.corpus import tokenizer_corpus

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# Control tokens: removed by `decode(skip_special_tokens=True)`.
CONTROL_TOKENS = (ENDOFTEXT, IM_START, IM_END)
# Markup tokens: single ids, but kept by `skip_special_tokens=True` so tool calls survive decoding (as in Qwen2.5).
MARKUP_TOKENS = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")

# Letters stay together with one leading non-letter, digits are split one by one, punctuation runs and newline
# runs are their own pieces: the split GPT-4-class byte-level tokenizers use (Qwen2 included).
PRETOKENIZE_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def chat_template_text() -> str:
    return resources.files("agentgym.models").joinpath("chat_template.jinja").read_text(encoding="utf-8")


def train_tokenizer(vocab_size: int = 4096, *, model_max_length: int = 8192) -> PreTrainedTokenizerFast:
    """Train the byte-level BPE on the synthetic chat corpus and wrap it as a transformers tokenizer.

    Byte-level means every string round-trips through encode/decode, whatever the model emits.
    """
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    added = [AddedToken(t, special=True, normalized=False) for t in CONTROL_TOKENS]
    added += [AddedToken(t, special=False, normalized=False) for t in MARKUP_TOKENS]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=added,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Registering the markup before training keeps it out of the merges: it is always one id.
    tok.add_special_tokens(added[:3])
    tok.add_tokens(added[3:])
    tok.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        chat_template=chat_template_text(),
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
