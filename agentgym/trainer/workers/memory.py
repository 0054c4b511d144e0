"""Memory each rank holds in each phase of a step (rollout, old log-probs, update, weight sync), for the step's metrics.

Why: colocated, the engine's KV cache, the trainer's shards, activations and optimizer state share one GPU; which
phase peaks, and by how much the hand-over (the KV cache released during the update, the optimizer state offloaded
between updates) lowers it, is what sizes `rollout.gpu_memory_utilization` and the micro-batches. A phase's figure is
the peak since the previous phase ended (`mark`), so the phases of one step tile it.

Keys: on CUDA `memory/<phase>/allocated_gib` (the peak of live tensors) and `memory/<phase>/reserved_gib` (the peak
the caching allocator held: what another process could not have); on every device `memory/<phase>/host_rss_gib`,
the process's resident host memory at the phase's end (Linux; absent elsewhere). A CPU run has only the last: host
memory has no per-phase peak counter, and "GPU" keys for host memory would mislead.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import torch

GIB = float(1 << 30)
PHASES = ("rollout", "old_log_prob", "update", "weight_sync")


def host_rss_bytes() -> int | None:
    """This process's resident set size, from /proc (None where there is no /proc)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class PhaseMemory:
    """Per-phase memory figures of one rank's device."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset()

    @property
    def on_cuda(self) -> bool:
        return self.device.type == "cuda"

    def reset(self) -> None:
        """Start a new peak here (after freeing memory, so the next phase's peak does not count what was freed)."""
        if self.on_cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def mark(self, phase: str) -> dict[str, float]:
        """The figures of `phase`, which ends now; the next phase's peak starts here."""
        out: dict[str, float] = {}
        if self.on_cuda:
            out[f"memory/{phase}/allocated_gib"] = torch.cuda.max_memory_allocated(self.device) / GIB
            out[f"memory/{phase}/reserved_gib"] = torch.cuda.max_memory_reserved(self.device) / GIB
        rss = host_rss_bytes()
        if rss is not None:
            out[f"memory/{phase}/host_rss_gib"] = rss / GIB
        self.reset()
        return out


def max_over_ranks(per_rank: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Each figure's maximum over the ranks (the rank closest to running out is the one that matters)."""
    out: dict[str, float] = {}
    for figures in per_rank:
        for key, value in figures.items():
            out[key] = max(out.get(key, value), value)
    return out
