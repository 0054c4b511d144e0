"""Tiny Qwen2-architecture models built locally (no downloads) and chat-template token helpers."""

from agentgym.models.build import MODEL_SIZES, build_tiny_model, tiny_tokenizer
from agentgym.models.chat import chat_delta_ids, chat_ids, chat_text
from agentgym.models.configs import qwen25_config

__all__ = [
    "MODEL_SIZES",
    "build_tiny_model",
    "chat_delta_ids",
    "chat_ids",
    "chat_text",
    "qwen25_config",
    "tiny_tokenizer",
]
