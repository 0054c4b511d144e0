from pathlib import Path

import pytest

from agentgym.models.vlm import build_tiny_vlm


@pytest.fixture(scope="session")
def tiny_vlm_dir(model_cache_dir: Path) -> Path:
    return build_tiny_vlm(model_cache_dir, size="tiny-vl", seed=0)


@pytest.fixture(scope="session")
def vision_processor(tiny_vlm_dir: Path):
    from agentgym.multimodal.processor import VisionProcessor

    return VisionProcessor.from_pretrained(tiny_vlm_dir)
