"""The paged in-process engine: paged KV cache, prefix reuse, continuous batching, CUDA-graph decode."""

from agentgym.rollout.engines.paged.engine import (
    PagedEngine,
    PagedEngineConfig,
    PagedEngineStats,
)

__all__ = ["PagedEngine", "PagedEngineConfig", "PagedEngineStats"]
