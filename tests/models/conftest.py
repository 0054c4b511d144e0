from pathlib import Path

import pytest

from agentgym.models import build_tiny_model


@pytest.fixture(scope="session")
def model_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One directory per session: other test folders that build the same model get a cache hit.
    return tmp_path_factory.getbasetemp() / "agentgym-models"


@pytest.fixture(scope="session")
def tiny_model_dir(model_cache_dir: Path) -> Path:
    return build_tiny_model(model_cache_dir, size="tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_tokenizer_loaded(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)
