from pathlib import Path

import pytest
from transformers import AutoTokenizer

from agentgym.models import build_tiny_model
from agentgym.rollout.engines import DynamicCacheEngine, DynamicCacheEngineConfig


@pytest.fixture(scope="session")
def other_tiny_model_dir(model_cache_dir: Path) -> Path:
    return build_tiny_model(model_cache_dir, size="tiny", seed=1)


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def chat_prompts(tokenizer) -> list[list[int]]:
    """Real chat-formatted prompts of different lengths."""
    questions = ["hi", "What is 12 * 7?", "Please search for the weather in Paris tomorrow and tell me the result."]
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True, return_dict=False
        )
        for q in questions
    ]


@pytest.fixture
async def engine(tiny_model_dir):
    async with DynamicCacheEngine(tiny_model_dir, DynamicCacheEngineConfig(max_batch_size=8)) as eng:
        yield eng
