"""Fixtures shared by several test folders: locally built tiny models, one build per session."""

from pathlib import Path

import pytest

from agentgym.models import build_tiny_model


@pytest.fixture(scope="session")
def model_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "agentgym-models"


@pytest.fixture(scope="session")
def tiny_model_dir(model_cache_dir: Path) -> Path:
    return build_tiny_model(model_cache_dir, size="tiny", seed=0)
