"""`SearchTool`: the model's `search`, answered by a Search-R1 style retrieval service (`POST /retrieve`).

Speaks the request verl's `SearchTool` sends (`{"queries", "topk", "return_scores": true}`) and shows the model
verl's text: `{"result": "Doc 1 (Title: ...)\\n...\\n\\nDoc 2 ..."}`, one block per query joined by `\\n---\\n`.
Anything that goes wrong (a bad query, the service down or refusing, nothing found) comes back as such a
`{"result": ...}` message that says what happened, never as an exception in the rollout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import weakref
from dataclasses import dataclass
from typing import Any, Optional, Union

import aiohttp
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, stop_after_delay, wait_random_exponential

from agentgym.errors import ConfigError, validation_problems
from agentgym.tools.base_tool import BaseTool
from agentgym.tools.rate_limit import (
    AsyncRateLimiter,
    GlobalTokenBucket,
    RateLimitTimeout,
    RayOrLocalTokenBucket,
    TokenBucket,
)
from agentgym.tools.sandbox_fusion.fleet import FleetSettings, SandboxFleet, Verdict, health_url_for
from agentgym.tools.sandbox_fusion.http import PROCESS_SESSIONS
from agentgym.tools.schemas import OpenAIFunctionToolSchema, ToolResponse

logger = logging.getLogger(__name__)

DEFAULT_TOOL_SCHEMA = OpenAIFunctionToolSchema.model_validate(
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the knowledge base; returns the best matching documents for each query.",
            "parameters": {
                "type": "object",
                "properties": {
                    "query_list": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "One or more search queries, a few words each.",
                    }
                },
                "required": ["query_list"],
            },
        },
    }
)

_RETRY_STATUS = (429, 500, 502, 503, 504)


class SearchToolConfig(BaseModel):
    """Settings of `SearchTool` (the `config:` mapping of its YAML entry).

    verl's keys keep verl's names and defaults, with one change of meaning, as for the code tool: `rate_limit` is
    a rate (requests per second, token bucket with `burst`) where verl used it as a cap on concurrent requests;
    `num_workers` caps the requests in flight per process.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    type: Optional[str] = Field(None, description="verl's tool kind marker ('native'); accepted and ignored.")
    retrieval_service_url: Union[str, tuple[str, ...]] = Field(
        description="The service's /retrieve endpoint, e.g. http://127.0.0.1:8000/retrieve (a bare base URL "
        "gets /retrieve appended); or a list of them (a fleet: least outstanding requests, GET /health checks, a "
        "failed call retried on another server)."
    )
    topk: int = Field(3, ge=1, description="Documents per query.")
    timeout: float = Field(
        30.0,
        gt=0,
        validation_alias=AliasChoices("timeout", "default_timeout"),
        description="Seconds one call may take from its first request to its answer, retries included "
        "(verl's `default_timeout` is read as the same key).",
    )
    num_workers: int = Field(120, ge=1, description="Most requests in flight at once, per process.")
    rate_limit: float = Field(120.0, gt=0, description="Requests per second allowed to start (token bucket).")
    burst: Optional[int] = Field(None, ge=1, description="Token bucket size; default: one second's worth.")
    enable_global_rate_limit: bool = Field(
        True,
        description="Share one token bucket among all processes of the Ray job; without Ray each process has its own.",
    )
    global_rate_limiter_name: Optional[str] = Field(None, description="Default: the service URL.")
    queue_timeout: float = Field(
        600.0, gt=0, description="Seconds a call may wait for a worker slot and a rate token before it gives up."
    )
    max_retries: int = Field(2, ge=0, description="Retries on connection errors, timeouts, 429 and 5xx answers.")
    max_queries: int = Field(16, ge=1, description="Most queries in one call; a longer list gets an error message.")
    max_query_chars: int = Field(1000, ge=1, description="Longest query accepted from the model.")

    @field_validator("retrieval_service_url", mode="before")
    @classmethod
    def _endpoint(cls, value: Any) -> Union[str, tuple[str, ...]]:
        if isinstance(value, (list, tuple)):
            urls = tuple(_retrieve_endpoint(v) for v in value)
            if not urls:
                raise ValueError("is an empty list; name at least one retrieval server")
            if len(set(urls)) != len(urls):
                raise ValueError(f"names a server twice: {list(urls)}")
            return urls
        return _retrieve_endpoint(value)

    @property
    def endpoints(self) -> tuple[str, ...]:
        url = self.retrieval_service_url
        return (url,) if isinstance(url, str) else url

    @property
    def effective_burst(self) -> int:
        return self.burst if self.burst is not None else max(1, math.ceil(self.rate_limit))

    @classmethod
    def from_tool_config(cls, config: dict[str, Any] | None, *, tool: str = "SearchTool") -> "SearchToolConfig":
        try:
            return cls.model_validate(dict(config or {}))
        except ValidationError as exc:
            raise ConfigError(
                validation_problems(exc),
                entry=tool,
                fix="set `retrieval_service_url: http://HOST:PORT/retrieve` (start a server with `python -m "
                "retrieval_server --corpus docs.jsonl`); known keys: " + ", ".join(sorted(cls.model_fields)) + ".",
            ) from None


def _retrieve_endpoint(value: Any) -> str:
    value = str(value or "").strip().rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"must be an http:// or https:// URL of the /retrieve endpoint, got {value!r}")
    return value if value.endswith("/retrieve") else f"{value}/retrieve"


class SearchFailed(Exception):
    """The service gave no usable answer; the message is what the model reads after "Search error: "."""


class _Retry(SearchFailed):
    def __init__(self, message: str, verdict: Verdict = Verdict.UNREACHABLE):
        super().__init__(message)
        self.verdict = verdict


def result_message(text: str) -> str:
    """verl's tool text: a JSON object with one `result` string."""
    return json.dumps({"result": text}, ensure_ascii=False)


def format_documents(hits: list[Any]) -> str:
    """One query's hits as verl shows them: `Doc i (Title: first line)` then the rest of the contents."""
    blocks = []
    for i, hit in enumerate(hits, start=1):
        document = hit.get("document", hit) if isinstance(hit, dict) else hit
        contents = document.get("contents") if isinstance(document, dict) else document
        if not isinstance(contents, str):
            raise SearchFailed(f"result {i} has no `contents` string, so it is not Search-R1's layout: {str(hit)[:200]}")
        title, _, text = contents.partition("\n")
        blocks.append(f"Doc {i} (Title: {title})\n{text}")
    return "\n\n".join(blocks)


def check_queries(queries: Any, settings: SearchToolConfig) -> Optional[str]:
    """Why `queries` cannot be searched, in words for the model; None when they can."""
    if not isinstance(queries, list) or not queries:
        return "Error: 'query_list' is missing, empty, or not a list in parameters. Call search with " \
               '{"query_list": ["a few words"]}.'
    if len(queries) > settings.max_queries:
        return f"Error: {len(queries)} queries in one call; at most {settings.max_queries}. Search fewer at once."
    for i, query in enumerate(queries):
        if not isinstance(query, str) or not query.strip():
            return f"Error: query_list[{i}] is {json.dumps(query)[:40]}; every query must be a non-empty string."
        if len(query) > settings.max_query_chars:
            return f"Error: query_list[{i}] has {len(query)} characters; keep each query under " \
                   f"{settings.max_query_chars}."
        if not any(ch.isalnum() for ch in query):
            return f"Error: query_list[{i}] ({query!r}) has no words to search for."
    return None


@dataclass
class SearchOutcome:
    text: str
    status: str
    total_results: int = 0
    error: Optional[str] = None


class SearchTool(BaseTool):
    """Searches a retrieval service and shows the model the documents. Stateless across calls: one object serves
    every trajectory. Config: `SearchToolConfig` (verl's keys plus ours)."""

    def __init__(self, config: dict, tool_schema: OpenAIFunctionToolSchema | None = None):
        super().__init__(config, tool_schema or DEFAULT_TOOL_SCHEMA)
        self.settings = SearchToolConfig.from_tool_config(config, tool=type(self).__name__)
        self._limiter = self._make_limiter()
        self.fleet = SandboxFleet(self.settings.endpoints, PROCESS_SESSIONS,
                                  FleetSettings(health_url=health_url_for("/retrieve", "/health")))
        self._slots: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]" = (
            weakref.WeakKeyDictionary()
        )

    def _make_limiter(self) -> AsyncRateLimiter:
        s = self.settings
        local = TokenBucket(s.rate_limit, s.effective_burst)
        if not s.enable_global_rate_limit:
            return local
        key = s.global_rate_limiter_name or ",".join(s.endpoints)
        return RayOrLocalTokenBucket(GlobalTokenBucket(key, s.rate_limit, s.effective_burst), local)

    def _slot(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        slot = self._slots.get(loop)
        if slot is None:
            slot = self._slots[loop] = asyncio.Semaphore(self.settings.num_workers)
        return slot

    @property
    def execute_timeout(self) -> float:
        """This tool bounds its own calls (queue_timeout, then timeout); the session steps in only past both."""
        return self.settings.queue_timeout + self.settings.timeout + 5.0

    def get_openai_tool_schema(self) -> OpenAIFunctionToolSchema:
        return self.tool_schema

    async def execute(
        self, instance_id: str, parameters: dict[str, Any], **kwargs: Any
    ) -> tuple[ToolResponse, float, dict]:
        queries = parameters.get("query_list")
        started = time.perf_counter()
        problem = check_queries(queries, self.settings)
        if problem is not None:
            outcome = SearchOutcome(result_message(problem), "bad_query", error=problem)
        else:
            outcome = await self.search(queries)
        metrics = {
            "query_count": len(queries) if isinstance(queries, list) else 0,
            "status": outcome.status,
            "total_results": outcome.total_results,
            "api_request_error": outcome.error,
            "seconds": time.perf_counter() - started,
        }
        return ToolResponse(text=outcome.text), 0.0, metrics

    async def search(self, queries: list[str]) -> SearchOutcome:
        """Search every query in one request; the outcome's text is what the model reads."""
        s = self.settings
        try:
            result = await self._admitted_request(queries)
        except SearchFailed as exc:
            return SearchOutcome(result_message(f"Search error: {exc}"), "api_error", error=str(exc))
        if not isinstance(result, list) or len(result) != len(queries) or not all(isinstance(r, list) for r in result):
            error = (f"the retrieval service at {s.retrieval_service_url} answered without one result list per "
                     f"query (Search-R1's layout): {json.dumps(result)[:200]}")
            return SearchOutcome(result_message(f"Search error: {error}"), "processing_error", error=error)
        total = sum(len(r) for r in result)
        if total == 0:
            return SearchOutcome(result_message("No search results found."), "no_results")
        try:
            blocks = [format_documents(r) if r else f"No search results found for {q!r}." for q, r in zip(queries, result)]
        except SearchFailed as exc:
            return SearchOutcome(result_message(f"Search error: {exc}"), "processing_error", error=str(exc))
        return SearchOutcome(result_message("\n---\n".join(blocks)), "success", total_results=total)

    async def _admitted_request(self, queries: list[str]) -> Any:
        s = self.settings
        queue_deadline = time.monotonic() + s.queue_timeout
        try:
            await asyncio.wait_for(self._slot().acquire(), timeout=s.queue_timeout)
        except asyncio.TimeoutError:
            raise SearchFailed(f"no free search worker within {s.queue_timeout:g}s (num_workers={s.num_workers}); "
                               "the search service is overloaded, try again later.") from None
        try:
            try:
                await self._limiter.acquire(timeout=max(0.0, queue_deadline - time.monotonic()))
            except RateLimitTimeout:
                raise SearchFailed(f"rate limit of {s.rate_limit:g} searches/s reached; try again later.") from None
            return await self._request_with_retries(queries)
        finally:
            self._slot().release()

    async def _request_with_retries(self, queries: list[str]) -> Any:
        s = self.settings
        payload = {"queries": queries, "topk": s.topk, "return_scores": True}
        deadline = time.monotonic() + s.timeout
        attempts = 0
        avoid: set[str] = set()
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(_Retry),
                stop=stop_after_attempt(s.max_retries + 1) | stop_after_delay(s.timeout),
                wait=wait_random_exponential(multiplier=0.2, max=2.0),
                reraise=True,
            ):
                with attempt:
                    attempts += 1
                    lease = await self.fleet.acquire(frozenset(avoid))
                    verdict = Verdict.OK
                    try:
                        return await self._post(lease.server, payload, max(deadline - time.monotonic(), 0.05))
                    except _Retry as exc:
                        verdict = exc.verdict
                        avoid.add(lease.server)
                        raise
                    finally:
                        self.fleet.release(lease, verdict)
        except _Retry as exc:
            raise SearchFailed(f"{exc} (gave up after {attempts} attempt{'s' if attempts != 1 else ''}).") from None

    async def _post(self, url: str, payload: dict[str, Any], timeout: float) -> Any:
        try:
            async with PROCESS_SESSIONS.get().post(
                url, json=payload, timeout=aiohttp.ClientTimeout(total=timeout),
                headers={"Accept": "application/json"},
            ) as response:
                body = await response.read()
                status = response.status
        except asyncio.TimeoutError:
            raise _Retry(f"the retrieval service at {url} did not answer within {timeout:.3g}s") from None
        except aiohttp.ClientConnectionError as exc:
            raise _Retry(f"the retrieval service at {url} is unreachable ({type(exc).__name__}: {exc})") from None
        except aiohttp.ClientError as exc:
            raise SearchFailed(f"request to {url} failed: {type(exc).__name__}: {exc}") from None
        detail = _detail(body)
        if status in _RETRY_STATUS:
            raise _Retry(f"the retrieval service at {url} answered HTTP {status}: {detail}",
                         Verdict.OVERLOADED if status in (429, 503) else Verdict.FAILED)
        if status != 200:
            raise SearchFailed(f"the retrieval service at {url} refused the request (HTTP {status}): {detail}")
        try:
            data = json.loads(body)
        except ValueError:
            raise SearchFailed(f"the retrieval service at {url} answered with something other than JSON: "
                               f"{body[:200].decode('utf-8', 'replace')!r}") from None
        if not isinstance(data, dict) or "result" not in data:
            raise SearchFailed(f"the retrieval service at {url} answered without a `result` key: {str(data)[:200]}")
        return data["result"]


def _detail(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body[:300].decode("utf-8", "replace").strip() or "(empty body)"
    if isinstance(data, dict) and "detail" in data:
        return str(data["detail"])[:500]
    return json.dumps(data)[:300]
