"""Engine over one or more SGLang servers through their native HTTP API (`/generate` with `input_ids`).

Routing, failover, health and weight-directory writing are shared with the vLLM engine (`http_engine`); this
module speaks SGLang's wire format and its `/update_weights_from_disk` route.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import httpx

from agentgym.rollout.engines.base import EngineError, GenerateOutput, SamplingParams
from agentgym.rollout.engines.servers.http_engine import HTTPEngineBase, HTTPEngineConfig, HTTPEngineStats, json_or_text
from agentgym.rollout.engines.servers.sglang_protocol import (
    error_message,
    generate_payload,
    image_data_payload,
    parse_generate_response,
)

log = logging.getLogger(__name__)

SGLangEngineStats = HTTPEngineStats


@dataclass
class SGLangEngineConfig(HTTPEngineConfig):
    """See `HTTPEngineConfig`; `extra_sampling_params` are merged into SGLang's `sampling_params`."""


class SGLangEngine(HTTPEngineBase):
    takes_images = True
    server_kind = "SGLang"
    start_hint = "start them (python -m sglang.launch_server ...)"
    config: SGLangEngineConfig

    def _generate_request(self, prompt_ids: list[int], sampling: SamplingParams) -> tuple[str, dict[str, Any]]:
        payload = generate_payload(
            prompt_ids, sampling, rid=self.new_request_id(), extra_sampling=self.config.extra_sampling_params
        )
        return "/generate", payload

    def _with_images(self, payload: dict[str, Any], images: Any) -> dict[str, Any]:
        return {**payload, "image_data": image_data_payload(images.pngs())}

    def _parse_generate(self, data: dict[str, Any], prompt_ids: list[int]) -> tuple[GenerateOutput, int, int]:
        out = parse_generate_response(data)
        meta = data["meta_info"]
        return out, int(meta.get("prompt_tokens") or len(prompt_ids)), int(meta.get("cached_tokens") or 0)

    def _error_message(self, status: int, body: Any) -> str:
        return error_message(status, body)

    async def _push_weights(self, url: str, path: str, version: int) -> None:
        """`/update_weights_from_disk`: SGLang lets requests in flight finish first (it holds a model-update lock)."""
        assert self._client is not None
        body = {"model_path": path, "abort_all_requests": False, "weight_version": str(version)}
        response = await self._client.post(f"{url}/update_weights_from_disk", json=body)
        data = json_or_text(response)
        if response.status_code != 200 or not (isinstance(data, dict) and data.get("success")):
            raise EngineError(error_message(response.status_code, data))

    async def flush_cache(self) -> None:
        """Drop every healthy server's prefix cache."""
        client = self._require_started()
        await asyncio.gather(*(client.post(f"{u}/flush_cache") for u in self._healthy_urls()))

    async def _on_started(self) -> None:
        assert self._client is not None
        for url in self.urls:
            try:
                response = await self._client.get(f"{url}/get_model_info", timeout=self.config.health_timeout_s)
                if response.status_code == 200:
                    self.server_info[url] = response.json()
            except (httpx.HTTPError, ValueError):
                continue
        paths = {info.get("model_path") for info in self.server_info.values()}
        if len(paths) > 1:
            log.warning("SGLang servers serve different models: %s", sorted(map(str, paths)))
