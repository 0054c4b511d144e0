"""Engine over one or more SGLang servers through their native HTTP API.

Each trajectory (`session_id`) sticks to one server so its growing prompt hits that server's prefix cache; a
server that refuses connections or fails its health check leaves the rotation (its sessions move to another
server) and rejoins, after receiving the latest weights, when `/health` answers again.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import torch
from safetensors.torch import save_file
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from agentgym.rollout.engines.base import EngineContextMixin, EngineError, GenerateOutput, SamplingParams
from agentgym.rollout.engines.routing import NoHealthyServer, StickyRouter
from agentgym.rollout.engines.sglang_protocol import error_message, generate_payload, parse_generate_response

log = logging.getLogger(__name__)

# Files a model directory needs besides its weights for SGLang to load it from disk.
_MODEL_SIDE_FILES = ("*.json", "*.jinja", "*.model", "*.txt", "*.py")


@dataclass
class SGLangEngineConfig:
    """Servers and client behaviour.

    `attempts` bounds tries per request across servers for connection failures and 5xx answers (a 4xx
    answer is the request's fault and is not retried). `weight_sync_dir` (shared with the servers' filesystem)
    and `model_path` (the served model directory, for config and tokenizer files) are needed only for
    `update_weights(state_dict)`, which writes the tensors there and asks every server to load them.
    """

    urls: list[str]
    request_timeout_s: float = 900.0
    connect_timeout_s: float = 5.0
    max_connections: int = 2048
    attempts: int = 4
    retry_max_wait_s: float = 2.0
    health_interval_s: float = 5.0
    health_timeout_s: float = 10.0
    health_path: str = "/health"
    start_timeout_s: float = 600.0
    max_sessions: int = 100_000
    weight_sync_dir: str | None = None
    model_path: str | None = None
    extra_sampling_params: dict[str, Any] = field(default_factory=dict)


@dataclass
class SGLangEngineStats:
    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    requests_by_server: Counter = field(default_factory=Counter)
    weight_version: int = 0

    @property
    def prefix_cache_hit_rate(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


class _Retryable(Exception):
    """A failure another server (or a later try) may not have."""


class SGLangEngine(EngineContextMixin):
    def __init__(self, config: SGLangEngineConfig):
        self.config = config
        self.urls = [u.rstrip("/") for u in config.urls]
        self.router = StickyRouter(self.urls, max_sessions=config.max_sessions)
        self.stats = SGLangEngineStats()
        self.server_info: dict[str, dict[str, Any]] = {}
        self._client: httpx.AsyncClient | None = None
        self._health_task: asyncio.Task | None = None
        self._weights_path: str | None = None
        self._weights_lock = asyncio.Lock()

    # ---- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the connection pool and wait until at least one server is healthy."""
        if self._client is not None:
            return
        cfg = self.config
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(cfg.request_timeout_s, connect=cfg.connect_timeout_s),
            limits=httpx.Limits(max_connections=cfg.max_connections, max_keepalive_connections=cfg.max_connections),
        )
        deadline = asyncio.get_running_loop().time() + cfg.start_timeout_s
        while not await self._check_all():
            if asyncio.get_running_loop().time() > deadline:
                await self.close()
                raise EngineError(
                    f"no SGLang server became healthy within {cfg.start_timeout_s}s at {self.urls}; start them "
                    f"(python -m sglang.launch_server ...) or fix the URLs"
                )
            await asyncio.sleep(min(0.5, cfg.health_interval_s))
        await self._read_model_info()
        self._health_task = asyncio.create_task(self._health_loop(), name="sglang-health")

    async def close(self) -> None:
        task, self._health_task = self._health_task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def health(self) -> bool:
        """Check every server now; true when at least one can take requests."""
        return self._client is not None and await self._check_all()

    def server_health(self) -> dict[str, bool]:
        return {url: url in self.router.healthy for url in self.urls}

    # ---- generation ----------------------------------------------------------------------------------------

    def _require_started(self) -> httpx.AsyncClient:
        if self._client is None:
            raise EngineError("the engine is not started; use `async with engine:` or `await engine.start()`")
        return self._client

    async def generate(
        self, prompt_ids: list[int], sampling: SamplingParams, *, session_id: str | None = None
    ) -> GenerateOutput:
        self._require_started()
        if not prompt_ids:
            raise ValueError("prompt_ids is empty; a generation needs at least one prompt token")
        payload = generate_payload(
            prompt_ids, sampling, rid=uuid.uuid4().hex, extra_sampling=self.config.extra_sampling_params
        )
        first = True
        try:
            async for attempt in self._retrying():
                with attempt:
                    if not first:
                        self.stats.retries += 1
                    first = False
                    url = self.router.pick(session_id)
                    data = await self._post_generate(url, payload)
        except _Retryable as exc:
            raise EngineError(f"generation failed after {self.config.attempts} attempts; last error: {exc}") from exc
        out = parse_generate_response(data)
        meta = data["meta_info"]
        self.stats.requests += 1
        self.stats.prompt_tokens += int(meta.get("prompt_tokens") or len(prompt_ids))
        self.stats.cached_tokens += int(meta.get("cached_tokens") or 0)
        self.stats.completion_tokens += len(out.token_ids)
        return out

    def end_session(self, session_id: str) -> None:
        """Forget a finished trajectory's server assignment (optional: old sessions also age out)."""
        self.router.forget(session_id)

    def _retrying(self) -> AsyncRetrying:
        return AsyncRetrying(
            stop=stop_after_attempt(self.config.attempts),
            wait=wait_exponential(multiplier=0.05, max=self.config.retry_max_wait_s),
            retry=retry_if_exception_type((_Retryable, NoHealthyServer)),
            reraise=True,
        )

    async def _post_generate(self, url: str, payload: dict[str, Any]) -> dict[str, Any]:
        assert self._client is not None
        self.router.in_flight[url] += 1
        try:
            response = await self._client.post(f"{url}/generate", json=payload)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError,
                httpx.WriteError) as exc:
            self.router.mark_down(url)
            log.warning("SGLang server %s failed (%r); taking it out of rotation", url, exc)
            raise _Retryable(f"{url}: {exc!r}") from exc
        except httpx.HTTPError as exc:  # timeouts and pool exhaustion: retrying elsewhere would double the load
            raise EngineError(f"request to SGLang server {url} failed: {exc!r}") from exc
        finally:
            self.router.in_flight[url] -= 1
        body = _json_or_text(response)
        if response.status_code >= 500:
            raise _Retryable(f"{url}: {error_message(response.status_code, body)}")
        if response.status_code != 200:
            raise EngineError(f"SGLang server {url} rejected the request: {error_message(response.status_code, body)}")
        if not isinstance(body, dict):
            raise EngineError(f"SGLang server {url} answered with non-JSON: {str(body)[:200]}")
        self.stats.requests_by_server[url] += 1
        return body

    # ---- weights ---------------------------------------------------------------------------------------------

    async def update_weights(
        self, state_dict: dict[str, torch.Tensor] | None = None, *, path: str | None = None
    ) -> None:
        """Make every server load new weights (`/update_weights_from_disk`).

        With `path`, the servers load that model directory. With `state_dict`, the tensors are first written
        as safetensors into a fresh version folder under `weight_sync_dir` next to copies of the served model's
        config and tokenizer files. SGLang lets requests in flight finish first (it holds a model-update lock).
        A server that is down now receives the latest weights when it comes back, before any request.
        """
        if (state_dict is None) == (path is None):
            raise ValueError("pass exactly one of state_dict or path")
        self._require_started()
        async with self._weights_lock:
            version = self.stats.weight_version + 1
            if state_dict is not None:
                path = await asyncio.to_thread(self._write_weight_dir, state_dict, version)
            assert path is not None
            targets = [u for u in self.urls if u in self.router.healthy]
            results = await asyncio.gather(*(self._push_weights(u, path, version) for u in targets), return_exceptions=True)
            failures = {u: r for u, r in zip(targets, results) if isinstance(r, BaseException)}
            for url in failures:
                self.router.mark_down(url)  # it must not serve old weights; the health loop retries the load
            self._weights_path = path
            self.stats.weight_version = version
            if failures:
                detail = "; ".join(f"{u}: {e}" for u, e in failures.items())
                raise EngineError(f"weight update to {path} failed on {len(failures)} server(s): {detail}")

    async def _push_weights(self, url: str, path: str, version: int) -> None:
        assert self._client is not None
        body = {"model_path": path, "abort_all_requests": False, "weight_version": str(version)}
        response = await self._client.post(f"{url}/update_weights_from_disk", json=body)
        data = _json_or_text(response)
        if response.status_code != 200 or not (isinstance(data, dict) and data.get("success")):
            raise EngineError(error_message(response.status_code, data))

    def _write_weight_dir(self, state_dict: dict[str, torch.Tensor], version: int) -> str:
        cfg = self.config
        if not cfg.weight_sync_dir or not cfg.model_path:
            raise EngineError(
                "update_weights(state_dict) needs SGLangEngineConfig.weight_sync_dir (a folder the servers can "
                "read) and model_path (the served model folder, for its config); or save the model yourself "
                "and call update_weights(path=...)"
            )
        root = Path(cfg.weight_sync_dir)
        target = root / f"weights-v{version:06d}"
        staging = root / f".{target.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for pattern in _MODEL_SIDE_FILES:
            for src in Path(cfg.model_path).glob(pattern):
                if src.name != "model.safetensors.index.json":
                    shutil.copy2(src, staging / src.name)
        # clone(): tied weights share storage, which safetensors refuses to write twice.
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
        save_file(tensors, staging / "model.safetensors", metadata={"format": "pt"})
        staging.rename(target)
        for old in sorted(root.glob("weights-v*")):
            if old != target and old.name < f"weights-v{version - 1:06d}":
                shutil.rmtree(old, ignore_errors=True)
        return str(target)

    async def flush_cache(self) -> None:
        """Drop every healthy server's prefix cache."""
        client = self._require_started()
        await asyncio.gather(*(client.post(f"{u}/flush_cache") for u in self.urls if u in self.router.healthy))

    # ---- health ----------------------------------------------------------------------------------------------

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval_s)
            try:
                await self._check_all()
            except Exception:  # the loop must outlive any single failed probe
                log.exception("SGLang health check failed")

    async def _check_all(self) -> bool:
        results = await asyncio.gather(*(self._probe(u) for u in self.urls))
        for url, ok in zip(self.urls, results):
            if not ok:
                self.router.mark_down(url)
            elif url not in self.router.healthy:
                # Under the weights lock: an update in progress finishes first, then this server gets its result.
                async with self._weights_lock:
                    if await self._resync(url):
                        self.router.mark_up(url)
                        log.info("SGLang server %s is back in rotation", url)
        return bool(self.router.healthy)

    async def _probe(self, url: str) -> bool:
        assert self._client is not None
        try:
            response = await self._client.get(f"{url}{self.config.health_path}", timeout=self.config.health_timeout_s)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def _resync(self, url: str) -> bool:
        """Load the latest weights into a server that returns to rotation, so it never serves stale ones."""
        if self._weights_path is None:
            return True
        try:
            await self._push_weights(url, self._weights_path, self.stats.weight_version)
            return True
        except (EngineError, httpx.HTTPError) as exc:
            log.warning("could not load %s into returning server %s: %s", self._weights_path, url, exc)
            return False

    async def _read_model_info(self) -> None:
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


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text
