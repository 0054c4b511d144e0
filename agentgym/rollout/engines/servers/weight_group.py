"""The HTTP side of a weight sync by collective broadcast to SGLang servers (`rollout.weight_sync=distributed`).

Why: the disk path writes the whole model to a folder every server must read (a shared filesystem across nodes)
and each server re-reads it from there; a broadcast moves the tensors once, device to device, and needs no shared
directory. The servers and trainer rank 0 form one process group (trainer rank 0 is group rank 0 and hosts the
store; server i's TP ranks are `rank_offset_i + tp_rank`); each sync the driver posts one
`/update_weights_from_distributed` per bucket to every server (names, dtypes and shapes of that bucket's tensors)
while trainer rank 0 broadcasts those tensors in that order. The wire format: `sglang_protocol`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx

from agentgym.rollout.engines.base import EngineError
from agentgym.rollout.engines.servers.http_engine import json_or_text
from agentgym.rollout.engines.servers.sglang_protocol import (
    WEIGHT_UPDATE_GROUP,
    destroy_weights_update_group_payload,
    error_message,
    init_weights_update_group_payload,
    update_weights_from_distributed_payload,
)

BucketSpec = tuple[list[str], list[str], list[list[int]]]  # names, dtypes, shapes of one bucket, in broadcast order


class SGLangWeightGroup:
    """The servers at `urls` (each with `ranks_per_server` group ranks: its TP size) as receivers of one group."""

    def __init__(self, urls: Sequence[str], *, ranks_per_server: int = 1, group_name: str = WEIGHT_UPDATE_GROUP,
                 timeout_s: float = 1800.0):
        if not urls:
            raise ValueError("a weight group needs at least one server")
        self.urls = list(urls)
        self.ranks_per_server = ranks_per_server
        self.group_name = group_name
        self.world_size = 1 + ranks_per_server * len(self.urls)
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=10.0))
        self.joined = False

    async def _post(self, url: str, path: str, body: dict[str, Any]) -> None:
        try:
            response = await self._client.post(f"{url}{path}", json=body)
        except httpx.HTTPError as exc:
            raise EngineError(f"{url}{path} failed: {exc!r}") from exc
        data = json_or_text(response)
        if response.status_code != 200 or (isinstance(data, dict) and data.get("success") is False):
            raise EngineError(f"{url}{path}: {error_message(response.status_code, data)}")

    async def init(self, master_address: str, master_port: int, backend: str) -> None:
        """Ask every server to join; each request returns once the group is formed, so trainer rank 0 must join
        (host the store at master_address:master_port) while these are under way."""
        await asyncio.gather(*(
            self._post(url, "/init_weights_update_group", init_weights_update_group_payload(
                master_address, master_port, 1 + i * self.ranks_per_server, self.world_size,
                group_name=self.group_name, backend=backend))
            for i, url in enumerate(self.urls)))
        self.joined = True

    async def update(self, buckets: Sequence[BucketSpec], version: int) -> None:
        """One sync as `version`: bucket by bucket, every server is told what comes next while trainer rank 0
        broadcasts it; the last bucket flushes the prefix caches and sets the servers' weight version."""
        for k, (names, dtypes, shapes) in enumerate(buckets):
            body = update_weights_from_distributed_payload(names, dtypes, shapes, group_name=self.group_name,
                                                           last_bucket=k == len(buckets) - 1,
                                                           weight_version=str(version))
            await asyncio.gather(*(self._post(url, "/update_weights_from_distributed", body) for url in self.urls))

    async def close(self) -> None:
        """Leave the group on every server still answering (best effort: a stopped server has left already)."""
        if self.joined:
            self.joined = False
            await asyncio.gather(*(self._post(url, "/destroy_weights_update_group",
                                              destroy_weights_update_group_payload(self.group_name))
                                   for url in self.urls), return_exceptions=True)
        await self._client.aclose()


def bucket_specs(plan: Any) -> list[BucketSpec]:
    """The request side of a `weight_broadcast.BroadcastPlan`: each bucket's names, dtypes and shapes in order."""
    return [([e.name for e in b.entries], [b.dtype] * len(b.entries), [list(e.shape) for e in b.entries])
            for b in plan.buckets]
