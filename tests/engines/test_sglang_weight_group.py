"""The weight sync by broadcast to SGLang servers, against our protocol server (tests/engines/sglang_test_server.py):
a real gloo group formed through `/init_weights_update_group` on the trainer side's TCP store, real tensors
broadcast per tensor while `/update_weights_from_distributed` is posted bucket by bucket, read back through
`/get_weights_by_name`."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import torch
from transformers import AutoModelForCausalLM

from .sglang_test_server import start_servers

from agentgym.rollout.engines.servers.weight_group import SGLangWeightGroup, bucket_specs
from agentgym.trainer.workers.weight_broadcast import SyncGroup, plan_broadcast, send_weights
from agentgym.trainer.workers.worker import free_address


async def _server_weights(url: str, names: list[str]) -> dict[str, torch.Tensor]:
    async with httpx.AsyncClient(timeout=30) as client:
        out = {}
        for name in names:
            response = await client.post(f"{url}/get_weights_by_name", json={"name": name, "truncate_size": 1 << 30})
            assert response.status_code == 200, response.text
            out[name] = torch.tensor(response.json(), dtype=torch.float32)
        return out


async def test_servers_receive_the_broadcast_bit_for_bit(tiny_model_dir):
    servers = await start_servers(str(tiny_model_dir), 2)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, torch_dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # weights no server has seen
    plan = plan_broadcast(model, torch.bfloat16, bucket_bytes=64 << 10)
    assert len(plan.buckets) > 1
    group = SGLangWeightGroup([s.url for s in servers])
    address = free_address()
    host, port = address.rsplit(":", 1)
    try:
        trainer, _ = await asyncio.gather(
            asyncio.to_thread(SyncGroup, address, 0, group.world_size, backend="gloo", prefix=group.group_name),
            group.init(host, int(port), "gloo"))
        assert [s.calls("/init_weights_update_group")[0]["rank_offset"] for s in servers] == [1, 2]
        sent, _ = await asyncio.gather(
            asyncio.to_thread(send_weights, model, plan, trainer, torch.device("cpu"), per_tensor=True),
            group.update(bucket_specs(plan), version=7))
        names = [n for n, _ in model.named_parameters()]
        assert sent == len(names)
        for server in servers:
            posts = server.calls("/update_weights_from_distributed")
            assert len(posts) == len(plan.buckets)
            assert [p["flush_cache"] for p in posts] == [False] * (len(posts) - 1) + [True]
            assert all(p["dtypes"] == ["bfloat16"] * len(p["names"]) for p in posts)
            assert server.weight_version == "7"
            got = await _server_weights(server.url, names)
            for name, param in model.named_parameters():
                assert torch.equal(got[name], param.detach().to(torch.bfloat16).float()), name
        await group.close()
        assert all(s.groups == {} for s in servers), "destroy_weights_update_group left the group"
    finally:
        await group.close()
        for server in servers:
            await server.close()


async def test_a_bucket_for_a_group_never_formed_is_refused(tiny_model_dir):
    (server,) = await start_servers(str(tiny_model_dir), 1)
    group = SGLangWeightGroup([server.url])
    try:
        with pytest.raises(Exception, match="init_weights_update_group first"):
            await group.update([(["x"], ["bfloat16"], [[1]])], version=1)
    finally:
        await group.close()
        await server.close()
