"""Inference engines behind one protocol: in-process transformers, and SGLang or vLLM servers over HTTP."""

from agentgym.rollout.engines.base import (
    FINISH_ABORT,
    FINISH_LENGTH,
    FINISH_STOP,
    Engine,
    EngineError,
    GenerateOutput,
    SamplingParams,
)
from agentgym.rollout.engines.servers.sglang_engine import SGLangEngine, SGLangEngineConfig, SGLangEngineStats
from agentgym.rollout.engines.dynamic_cache import EngineStats, DynamicCacheEngine, DynamicCacheEngineConfig
from agentgym.rollout.engines.servers.vllm_engine import VLLMEngine, VLLMEngineConfig

__all__ = [
    "FINISH_ABORT",
    "FINISH_LENGTH",
    "FINISH_STOP",
    "Engine",
    "EngineError",
    "EngineStats",
    "GenerateOutput",
    "SGLangEngine",
    "SGLangEngineConfig",
    "SGLangEngineStats",
    "SamplingParams",
    "DynamicCacheEngine",
    "DynamicCacheEngineConfig",
    "VLLMEngine",
    "VLLMEngineConfig",
]
