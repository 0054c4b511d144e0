from pathlib import Path

import pytest



@pytest.fixture(scope="session")
def tiny_tokenizer_loaded(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)
