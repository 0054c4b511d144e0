"""Engine over one or more vLLM servers (`vllm serve`) through the OpenAI-compatible `POST /v1/completions`.

Prompts go in as token ids and the sampled ids come back exactly (`return_tokens_as_token_ids`, checked against
`token_ids` where the server sends them), each with its logprob.

Logprobs: vLLM's default `--logprobs-mode raw_logprobs` reports `log_softmax(logits)` of the raw logits, which
ignores the temperature. Our convention (engines/base.py) is `log_softmax(logits / temperature)`, which is what
`--logprobs-mode processed_logprobs` reports in vLLM >= 0.10.2 (taken after temperature scaling); so servers must be
started with `--logprobs-mode processed_logprobs` (the launcher does) and `logprobs_mode` below must say so. Under
`raw_logprobs` only greedy and temperature-1 requests agree with the convention, and the engine refuses others
rather than return logprobs of another distribution. With top-k/top-p active, `processed_logprobs` is also
renormalised over the kept tokens, where the convention is not (verl's and our defaults leave both filters off).

Weight updates (`update_weights`) use the dev-mode routes of a server started with `VLLM_SERVER_DEV_MODE=1`:
`POST /collective_rpc` calls the GPU workers' `update_config` (pointing the model config at the new directory)
and `reload_weights` (vLLM's own documented way to load real weights into a running engine, as in its
`skip_loading_weights_in_engine_init` example), then `POST /reset_prefix_cache` drops KV computed with the old
weights. Around it, `/pause?mode=wait` and `/resume` (newer vLLM) let requests in flight finish first; servers
without them are updated between scheduler steps. vLLM has no stable route that takes a directory in one call,
and its NCCL/IPC weight-transfer routes (`/init_weight_transfer_engine`, `/update_weights`) move tensors, not
paths; a server without `/collective_rpc` gets an EngineError that says how to start it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from agentgym.rollout.engines.base import EngineError, GenerateOutput, SamplingParams
from agentgym.rollout.engines.servers.http_engine import HTTPEngineBase, HTTPEngineConfig, error_message, json_or_text
from agentgym.rollout.engines.servers.vllm_protocol import completion_payload, parse_completion_response

log = logging.getLogger(__name__)

LogprobsMode = Literal["processed_logprobs", "raw_logprobs"]
LOGPROBS_MODES = ("processed_logprobs", "raw_logprobs")


@dataclass
class VLLMEngineConfig(HTTPEngineConfig):
    """See `HTTPEngineConfig`. `model` is the served model name sent with each request (read from `/v1/models`
    when unset). `logprobs_mode` is the servers' `--logprobs-mode`. `pause_for_weight_update` drains requests in
    flight before a weight load where the server offers `/pause`. `extra_sampling_params` are merged into each
    completion request (e.g. `{"repetition_penalty": 1.05}`)."""

    model: str | None = None
    logprobs_mode: LogprobsMode = "processed_logprobs"
    pause_for_weight_update: bool = True
    weight_update_timeout_s: float = 1800.0

    def __post_init__(self) -> None:
        if self.logprobs_mode not in LOGPROBS_MODES:
            raise ValueError(
                f"logprobs_mode must be one of {LOGPROBS_MODES} (the servers' --logprobs-mode), got {self.logprobs_mode!r}"
            )


class VLLMEngine(HTTPEngineBase):
    takes_images = False
    server_kind = "vLLM"
    start_hint = "start them (vllm serve MODEL --logprobs-mode processed_logprobs ...)"
    config: VLLMEngineConfig

    def __init__(self, config: VLLMEngineConfig, **kwargs: Any):
        super().__init__(config, **kwargs)
        self.served_model: str | None = config.model

    def _generate_request(self, prompt_ids: list[int], sampling: SamplingParams) -> tuple[str, dict[str, Any]]:
        if self.config.logprobs_mode == "raw_logprobs" and not sampling.greedy and sampling.temperature != 1.0:
            raise EngineError(
                f"the vLLM servers report raw logprobs (logprobs_mode=raw_logprobs), which ignore temperature "
                f"{sampling.temperature}; start them with --logprobs-mode processed_logprobs and set "
                "engine_kwargs.vllm.logprobs_mode=processed_logprobs, or sample at temperature 1"
            )
        if self.served_model is None:
            raise EngineError("the served model name is unknown; set engine_kwargs.vllm.model or start the engine first")
        payload = completion_payload(prompt_ids, sampling, model=self.served_model, extra=self.config.extra_sampling_params)
        return "/v1/completions", payload

    def _parse_generate(self, data: dict[str, Any], prompt_ids: list[int]) -> tuple[GenerateOutput, int, int]:
        out, prompt_tokens, cached = parse_completion_response(data)
        return out, prompt_tokens if prompt_tokens is not None else len(prompt_ids), cached or 0

    async def _on_started(self) -> None:
        """Read `/v1/models` from each healthy server: the served name, its source path and context length."""
        assert self._client is not None
        for url in self._healthy_urls():
            try:
                response = await self._client.get(f"{url}/v1/models", timeout=self.config.health_timeout_s)
                cards = response.json().get("data") if response.status_code == 200 else None
            except (httpx.HTTPError, ValueError, AttributeError):
                continue
            if cards:
                self.server_info[url] = cards[0]
        names = {str(info.get("id")) for info in self.server_info.values()}
        if self.served_model is None:
            if not names:
                raise EngineError(f"no vLLM server at {self.urls} answered GET /v1/models; set engine_kwargs.vllm.model")
            if len(names) > 1:
                raise EngineError(
                    f"the vLLM servers serve different models {sorted(names)}; give them one --served-model-name or "
                    "set engine_kwargs.vllm.model"
                )
            self.served_model = names.pop()

    # ---- weights ---------------------------------------------------------------------------------------------

    async def _push_weights(self, url: str, path: str, version: int) -> None:
        assert self._client is not None
        paused = self.config.pause_for_weight_update and await self._pause(url)
        try:
            await self._rpc(url, "update_config", [{"model_config": {"model": path}}])
            await self._rpc(url, "reload_weights", [])
            response = await self._client.post(f"{url}/reset_prefix_cache", timeout=self.config.weight_update_timeout_s)
            if response.status_code != 200:
                raise EngineError(f"reset_prefix_cache: {error_message(response.status_code, json_or_text(response))}")
        finally:
            if paused:
                await self._client.post(f"{url}/resume", timeout=self.config.health_timeout_s)

    async def _rpc(self, url: str, method: str, args: list[Any]) -> None:
        assert self._client is not None
        body = {"method": method, "args": args, "timeout": self.config.weight_update_timeout_s}
        response = await self._client.post(f"{url}/collective_rpc", json=body, timeout=self.config.weight_update_timeout_s)
        if response.status_code == 404:
            raise EngineError(
                f"vLLM server {url} has no /collective_rpc route, so it cannot load new weights over HTTP; start it "
                "with VLLM_SERVER_DEV_MODE=1 (the launcher does), on a vLLM whose GPU worker has update_config and "
                "reload_weights (benchmarks/gpu/vllm_engine_check.sh checks a given version)"
            )
        if response.status_code != 200:
            raise EngineError(f"collective_rpc {method}: {error_message(response.status_code, json_or_text(response))}")

    async def _pause(self, url: str) -> bool:
        """Drain requests in flight (`mode=wait`; older servers read `wait_for_inflight_requests`)."""
        assert self._client is not None
        params = {"mode": "wait", "wait_for_inflight_requests": "true", "clear_cache": "true"}
        response = await self._client.post(f"{url}/pause", params=params, timeout=self.config.weight_update_timeout_s)
        if response.status_code == 404:
            log.info("vLLM server %s has no /pause; loading weights between scheduler steps", url)
            return False
        if response.status_code != 200:
            raise EngineError(f"pause: {error_message(response.status_code, json_or_text(response))}")
        return True

    async def flush_cache(self) -> None:
        """Drop every healthy server's prefix cache (`/reset_prefix_cache`, dev mode)."""
        client = self._require_started()
        for url in self._healthy_urls():
            response = await client.post(f"{url}/reset_prefix_cache")
            if response.status_code != 200:
                raise EngineError(f"{url}/reset_prefix_cache: {error_message(response.status_code, json_or_text(response))}")
