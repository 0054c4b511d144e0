"""What the engines over HTTP servers (SGLang, vLLM) share, whatever the wire format.

Each trajectory (`session_id`) sticks to one server so its growing prompt hits that server's prefix cache; a
server that refuses connections or fails its health check leaves the rotation (its sessions move to another
server) and rejoins, after receiving the latest weights, when its health route answers again. Weight updates
from tensors are written as a model directory the servers load from disk.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import httpx
import torch
from safetensors.torch import save_file
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from agentgym.rollout.engines.base import EngineContextMixin, EngineError, GenerateOutput, SamplingParams
from agentgym.rollout.engines.servers.routing import NoHealthyServer, StickyRouter
from agentgym.rollout.engines.servers.shared_dir import check_weight_dir_shared

if TYPE_CHECKING:
    from agentgym.rollout.engines.servers.launch import ServerLauncher

log = logging.getLogger(__name__)

# Files a model directory needs besides its weights for a server to load it from disk.
_MODEL_SIDE_FILES = ("*.json", "*.jinja", "*.model", "*.txt", "*.py")


@dataclass
class HTTPEngineConfig:
    """Servers and client behaviour.

    `attempts` bounds tries per request across servers for connection failures and 5xx answers (a 4xx
    answer is the request's fault and is not retried). `weight_sync_dir` (shared with the servers' filesystem)
    and `model_path` (the served model directory, for config and tokenizer files) are needed only for
    `update_weights(state_dict)`, which writes the tensors there and asks every server to load them.
    `urls` may be empty only when the engine is given a launcher that starts the servers.
    """

    urls: list[str] = field(default_factory=list)
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
    # None: checked against the servers' hosts and the folder's filesystem (shared_dir); True: trusted as shared
    weight_sync_dir_shared: bool | None = None
    model_path: str | None = None
    extra_sampling_params: dict[str, Any] = field(default_factory=dict)


@dataclass
class HTTPEngineStats:
    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    requests_by_server: Counter = field(default_factory=Counter)
    weight_version: int = 0

    def counters(self) -> dict[str, float]:
        """The cumulative counters every engine reports: a server's prompt tokens are its context tokens."""
        return {"context_tokens": self.prompt_tokens, "cached_tokens": self.cached_tokens,
                "generated_tokens": self.completion_tokens}

    @property
    def prefix_cache_hit_rate(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


class Retryable(Exception):
    """A failure another server (or a later try) may not have."""


class HTTPEngineBase(EngineContextMixin):
    """Routing, retries, health and weight-update bookkeeping; subclasses speak one server's API."""
    takes_images = False  # engines whose protocol carries images (SGLang) say True

    server_kind: ClassVar[str] = "HTTP"
    start_hint: ClassVar[str] = "start the servers"

    def __init__(self, config: HTTPEngineConfig, *, launcher: ServerLauncher | None = None):
        if not config.urls and launcher is None:
            raise ValueError(f"no {self.server_kind} server URLs; pass urls or a launcher that starts the servers")
        self.config = config
        self.launcher = launcher
        self.urls: list[str] = []
        self.router: StickyRouter | None = None
        if config.urls:
            self._set_urls(config.urls)
        self.stats = HTTPEngineStats()
        self.server_info: dict[str, dict[str, Any]] = {}
        self._client: httpx.AsyncClient | None = None
        self._health_task: asyncio.Task | None = None
        self._weights_path: str | None = None
        self._weights_lock = asyncio.Lock()
        self._weight_dir_checked = False  # the servers can read weight_sync_dir (shared_dir), checked once

    def _set_urls(self, urls: list[str]) -> None:
        self.urls = [u.rstrip("/") for u in urls]
        self.router = StickyRouter(self.urls, max_sessions=self.config.max_sessions)

    # ---- what a server kind provides -------------------------------------------------------------------------

    def _with_images(self, payload: dict[str, Any], images: Any) -> dict[str, Any]:
        """Add an `ImageInputs`' images to a generate request; servers whose protocol is not wired for them refuse."""
        raise EngineError(f"the {self.server_kind} engine does not send images yet; serve vision-language models "
                          "with SGLang or the CPU in-process engine")

    def _generate_request(self, prompt_ids: list[int], sampling: SamplingParams) -> tuple[str, dict[str, Any]]:
        """The path and JSON body of one generation request."""
        raise NotImplementedError

    def _parse_generate(self, data: dict[str, Any], prompt_ids: list[int]) -> tuple[GenerateOutput, int, int]:
        """The output, the prompt token count and the prefix-cache hit count of one answer."""
        raise NotImplementedError

    async def _push_weights(self, url: str, path: str, version: int) -> None:
        """Make one server load the model directory `path`; raise EngineError when it does not."""
        raise NotImplementedError

    def _error_message(self, status: int, body: Any) -> str:
        return error_message(status, body)

    async def _on_started(self) -> None:
        """Read what the servers say about themselves once they are healthy."""

    # ---- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Launch the servers if a launcher was given, open the pool and wait until one server is healthy."""
        if self._client is not None:
            return
        cfg = self.config
        if self.launcher is not None and self.router is None:
            self._set_urls(await self.launcher.start())
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(cfg.request_timeout_s, connect=cfg.connect_timeout_s),
            limits=httpx.Limits(max_connections=cfg.max_connections, max_keepalive_connections=cfg.max_connections),
        )
        try:
            deadline = asyncio.get_running_loop().time() + cfg.start_timeout_s
            while not await self._check_all():
                if asyncio.get_running_loop().time() > deadline:
                    raise EngineError(
                        f"no {self.server_kind} server became healthy within {cfg.start_timeout_s}s at {self.urls}; "
                        f"{self.start_hint} or fix the URLs"
                    )
                await asyncio.sleep(min(0.5, cfg.health_interval_s))
            await self._on_started()
        except BaseException:
            await self.close()
            raise
        self._health_task = asyncio.create_task(self._health_loop(), name=f"{self.server_kind}-health")

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
        if self.launcher is not None:
            await self.launcher.stop()
            self.router, self.urls = None, []  # a later start() launches fresh servers on new ports

    async def health(self) -> bool:
        """Check every server now; true when at least one can take requests."""
        return self._client is not None and await self._check_all()

    def server_health(self) -> dict[str, bool]:
        if self.router is None:
            return {}
        return {url: url in self.router.healthy for url in self.urls}

    # ---- generation ----------------------------------------------------------------------------------------

    def _require_started(self) -> httpx.AsyncClient:
        if self._client is None or self.router is None:
            raise EngineError("the engine is not started; use `async with engine:` or `await engine.start()`")
        return self._client

    async def generate(
        self, prompt_ids: list[int], sampling: SamplingParams, *, session_id: str | None = None, images: Any = None
    ) -> GenerateOutput:
        self._require_started()
        if not prompt_ids:
            raise ValueError("prompt_ids is empty; a generation needs at least one prompt token")
        path, payload = self._generate_request(prompt_ids, sampling)
        if images is not None and len(images):
            payload = self._with_images(payload, images)
        data = await self._post_routed(path, payload, session_id)
        out, prompt_tokens, cached = self._parse_generate(data, prompt_ids)
        self.stats.requests += 1
        self.stats.prompt_tokens += prompt_tokens
        self.stats.cached_tokens += cached
        self.stats.completion_tokens += len(out.token_ids)
        return out

    def end_session(self, session_id: str) -> None:
        """Forget a finished trajectory's server assignment (optional: old sessions also age out)."""
        assert self.router is not None
        self.router.forget(session_id)

    @staticmethod
    def new_request_id() -> str:
        return uuid.uuid4().hex

    def _retrying(self) -> AsyncRetrying:
        return AsyncRetrying(
            stop=stop_after_attempt(self.config.attempts),
            wait=wait_exponential(multiplier=0.05, max=self.config.retry_max_wait_s),
            retry=retry_if_exception_type((Retryable, NoHealthyServer)),
            reraise=True,
        )

    async def _post_routed(self, path: str, payload: dict[str, Any], session_id: str | None) -> dict[str, Any]:
        """POST to the session's server, moving to another one on connection failures and 5xx answers."""
        assert self.router is not None
        first = True
        try:
            async for attempt in self._retrying():
                with attempt:
                    if not first:
                        self.stats.retries += 1
                    first = False
                    url = self.router.pick(session_id)
                    return await self._post(url, path, payload)
        except Retryable as exc:
            raise EngineError(f"generation failed after {self.config.attempts} attempts; last error: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _post(self, url: str, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        assert self._client is not None and self.router is not None
        self.router.in_flight[url] += 1
        try:
            response = await self._client.post(f"{url}{path}", json=payload)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError,
                httpx.WriteError) as exc:
            self.router.mark_down(url)
            log.warning("%s server %s failed (%r); taking it out of rotation", self.server_kind, url, exc)
            raise Retryable(f"{url}: {exc!r}") from exc
        except httpx.HTTPError as exc:  # timeouts and pool exhaustion: retrying elsewhere would double the load
            raise EngineError(f"request to {self.server_kind} server {url} failed: {exc!r}") from exc
        finally:
            self.router.in_flight[url] -= 1
        body = json_or_text(response)
        if response.status_code >= 500:
            raise Retryable(f"{url}: {self._error_message(response.status_code, body)}")
        if response.status_code != 200:
            raise EngineError(
                f"{self.server_kind} server {url} rejected the request: {self._error_message(response.status_code, body)}"
            )
        if not isinstance(body, dict):
            raise EngineError(f"{self.server_kind} server {url} answered with non-JSON: {str(body)[:200]}")
        self.stats.requests_by_server[url] += 1
        return body

    # ---- weights ---------------------------------------------------------------------------------------------

    async def update_weights(
        self, state_dict: dict[str, torch.Tensor] | None = None, *, path: str | None = None
    ) -> None:
        """Make every server load new weights from a model directory.

        With `path`, the servers load that directory. With `state_dict`, the tensors are first written as
        safetensors into a fresh version folder under `weight_sync_dir` next to copies of the served model's
        config and tokenizer files. A server that fails the load leaves the rotation (it must not serve old
        weights); a server that is down now receives the latest weights when it comes back, before any request.
        """
        if (state_dict is None) == (path is None):
            raise ValueError("pass exactly one of state_dict or path")
        self._require_started()
        assert self.router is not None
        async with self._weights_lock:
            version = self.stats.weight_version + 1
            if state_dict is not None:
                path = await asyncio.to_thread(self._write_weight_dir, state_dict, version)
            assert path is not None
            targets = [u for u in self.urls if u in self.router.healthy]
            results = await asyncio.gather(*(self._push_weights(u, path, version) for u in targets), return_exceptions=True)
            failures = {u: r for u, r in zip(targets, results) if isinstance(r, BaseException)}
            for url in failures:
                self.router.mark_down(url)  # the health loop retries the load before readmitting it
            self._weights_path = path
            self.stats.weight_version = version
            if failures:
                detail = "; ".join(f"{u}: {e}" for u, e in failures.items())
                raise EngineError(f"weight update to {path} failed on {len(failures)} server(s): {detail}")

    def _write_weight_dir(self, state_dict: dict[str, torch.Tensor], version: int) -> str:
        cfg = self.config
        if not cfg.weight_sync_dir or not cfg.model_path:
            raise EngineError(
                f"update_weights(state_dict) needs the engine config's weight_sync_dir (a folder the {self.server_kind} "
                "servers can read) and model_path (the served model folder, for its config); or save the model "
                "yourself and call update_weights(path=...)"
            )
        if not self._weight_dir_checked:
            check_weight_dir_shared(cfg.weight_sync_dir, self.urls, declared_shared=cfg.weight_sync_dir_shared,
                                    server_kind=self.server_kind)
            self._weight_dir_checked = True
        return str(write_weight_dir(state_dict, Path(cfg.weight_sync_dir), Path(cfg.model_path), version))

    # ---- health ----------------------------------------------------------------------------------------------

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval_s)
            try:
                await self._check_all()
            except Exception:  # the loop must outlive any single failed probe
                log.exception("%s health check failed", self.server_kind)

    async def _check_all(self) -> bool:
        assert self.router is not None
        results = await asyncio.gather(*(self._probe(u) for u in self.urls))
        for url, ok in zip(self.urls, results):
            if not ok:
                self.router.mark_down(url)
            elif url not in self.router.healthy:
                # Under the weights lock: an update in progress finishes first, then this server gets its result.
                async with self._weights_lock:
                    if await self._resync(url):
                        self.router.mark_up(url)
                        log.info("%s server %s is back in rotation", self.server_kind, url)
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

    def _healthy_urls(self) -> list[str]:
        assert self.router is not None
        return [u for u in self.urls if u in self.router.healthy]


def write_weight_dir(state_dict: dict[str, torch.Tensor], root: Path, model_path: Path, version: int) -> Path:
    """`root/weights-v{version}`: the tensors as safetensors plus the served model's config and tokenizer files.

    Written under a hidden name and renamed into place, so a server never sees half a directory; versions older
    than the previous one are removed.
    """
    target = root / f"weights-v{version:06d}"
    staging = root / f".{target.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for pattern in _MODEL_SIDE_FILES:
        for src in model_path.glob(pattern):
            if src.name != "model.safetensors.index.json":
                shutil.copy2(src, staging / src.name)
    # clone(): tied weights share storage, which safetensors refuses to write twice.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    save_file(tensors, staging / "model.safetensors", metadata={"format": "pt"})
    staging.rename(target)
    for old in sorted(root.glob("weights-v*")):
        if old != target and old.name < f"weights-v{version - 1:06d}":
            shutil.rmtree(old, ignore_errors=True)
    return target


def json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def error_message(status: int, body: Any) -> str:
    """Error bodies of SGLang and vLLM: `{"error": {"message": ...}}`, `{"message": ...}`, `{"detail": ...}`
    (FastAPI) or plain text."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and "message" in err:
            return f"HTTP {status}: {err['message']}"
        if isinstance(err, str):
            return f"HTTP {status}: {err}"
        if "message" in body:
            return f"HTTP {status}: {body['message']}"
        if "detail" in body:
            return f"HTTP {status}: {body['detail']}"
    return f"HTTP {status}: {str(body)[:300]}"
