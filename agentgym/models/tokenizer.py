"""A byte-level BPE tokenizer trained here, with Qwen2.5's chat markup tokens and a tool-aware chat template."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from importlib import resources

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
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


_MARKUP_RE = re.compile("|".join(re.escape(t) for t in MARKUP_TOKENS))


def _without_markup(docs: Iterable[str]) -> Iterator[str]:
    """Cut the markup out of the training text: each markup token is one id, so merges for it are wasted."""
    for doc in docs:
        yield from _MARKUP_RE.split(doc)


def chat_template_text() -> str:
    return resources.files("agentgym.models").joinpath("chat_template.jinja").read_text(encoding="utf-8")


def train_tokenizer(vocab_size: int = 4096, *, model_max_length: int = 8192) -> PreTrainedTokenizerFast:
    """Train the byte-level BPE on the synthetic chat corpus and wrap it as a transformers tokenizer.

    Byte-level: any NFC-normalized string round-trips through encode/decode.
    """
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    # NFC as in Qwen2.5; transformers 5 rebuilds a qwen2 model's tokenizer with it whatever tokenizer.json says.
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    control = [AddedToken(t, special=True, normalized=False) for t in CONTROL_TOKENS]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(MARKUP_TOKENS),
        min_frequency=2,
        special_tokens=control,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.add_special_tokens(control)
    tok.train_from_iterator(_without_markup(tokenizer_corpus()), trainer=trainer)
    # Added after training so they take fresh ids at the end (added before, they would share ids with bytes).
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in MARKUP_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        chat_template=chat_template_text(),
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
