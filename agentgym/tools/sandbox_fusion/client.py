"""One `/run_code` call, end to end: admission (worker slot, rate token), the HTTP request, retries, and a verdict.

Two clocks bound a call. The queue bound (`queue_timeout`) covers the wait for the first worker slot and rate
token, before anything is sent: a long queue delays a call without eating into its deadline, and a call that
never got out of the queue says so (outcome `queue_timeout`). The deadline starts when the first request is sent
and covers that request, the retries and their backoff.

Retries (tenacity, exponential backoff with full jitter) cover what the sandbox side got wrong. Overload (429,
503) is retried until the deadline, honouring the server's `Retry-After` plus jitter so that a crowd of rejected
calls does not come back at one instant; other sandbox-side failures (connection errors, 502/504, timeouts of the
request itself, `SandboxError`) are retried at most `max_retries` times. What the code did (non-zero exit, compile
error, its own time limit) is an answer, never retried.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
import weakref
from dataclasses import dataclass
from typing import Awaitable, Callable, Optional

import aiohttp
from pydantic import ValidationError
from tenacity import AsyncRetrying, retry_if_exception_type, wait_random_exponential

from agentgym.tools.rate_limit import AsyncRateLimiter, RateLimitTimeout
from agentgym.tools.sandbox_fusion.http import SharedHttpSessions
from agentgym.tools.sandbox_fusion.metrics import Outcome
from agentgym.tools.sandbox_fusion.config import run_cases_endpoint
from agentgym.tools.sandbox_fusion.wire import RunCasesRequest, RunCasesResponse, RunCodeRequest, RunCodeResponse

_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
_SNIPPET = 200
_DETAIL = 1000


class _Retryable(Exception):
    def __init__(self, outcome: Outcome, reason: str, http_status: Optional[int] = None, retry_after: float = 0.0):
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason
        self.http_status = http_status
        self.retry_after = retry_after


class _Final(Exception):
    def __init__(self, outcome: Outcome, reason: str, http_status: Optional[int] = None):
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason
        self.http_status = http_status


class _DeadlineReached(Exception):
    pass


class _QueueTimeout(Exception):
    pass


@dataclass
class RetryPolicy:
    max_retries: int
    initial_backoff: float
    max_backoff: float
    retry_on_status: tuple[int, ...]
    overload_status: tuple[int, ...] = (429, 503)
    """Of `retry_on_status`, the answers that mean 'busy, come back later': retried until the deadline."""


@dataclass
class CallResult:
    """What came back: a server answer (`response`), or the reason there is none (`error`)."""

    response: Optional[RunCodeResponse | RunCasesResponse]  # RunCasesResponse from run_cases
    error: Optional[str]
    error_outcome: Optional[Outcome]
    attempts: int
    queue_wait_s: float
    http_status: Optional[int]


def _detail(body: bytes) -> str:
    """FastAPI-style `{"detail": ...}` says what was wrong with the request; fall back to the raw body."""
    try:
        detail = json.loads(body).get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, str):
        return detail[:_DETAIL]
    if detail is not None:
        return json.dumps(detail)[:_DETAIL]
    return _snippet(body)


def _snippet(body: bytes) -> str:
    text = body[:_SNIPPET].decode("utf-8", errors="replace")
    return text + ("..." if len(body) > _SNIPPET else "")


def _retry_after_seconds(value: Optional[str]) -> float:
    """`Retry-After` in either of its forms (seconds, or an HTTP date); 0 when absent or unreadable."""
    if not value:
        return 0.0
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    return max(0.0, when.timestamp() - time.time())


class SandboxClient:
    """Sends `/run_code` requests for one tool: at most `max_in_flight` at once, started at the limiter's pace."""

    def __init__(
        self,
        *,
        endpoint: Callable[[], Awaitable[str]],
        sessions: SharedHttpSessions,
        limiter: AsyncRateLimiter,
        max_in_flight: int,
        retry: RetryPolicy,
        queue_timeout: Optional[float] = None,
    ):
        self._endpoint = endpoint
        self._sessions = sessions
        self._limiter = limiter
        self._max_in_flight = max_in_flight
        self._retry = retry
        self._queue_timeout = queue_timeout
        self._slots: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]" = (
            weakref.WeakKeyDictionary()
        )

    def _slot(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        sem = self._slots.get(loop)
        if sem is None:
            sem = self._slots[loop] = asyncio.Semaphore(self._max_in_flight)
        return sem

    async def run_code(self, request: RunCodeRequest, *, request_timeout: float, deadline: float) -> CallResult:
        return await self._call(request, request_timeout, deadline)

    async def run_cases(self, request: RunCasesRequest, *, request_timeout: float, deadline: float) -> CallResult:
        """Our server's `/run_cases` (one compile, a sandbox per case), with run_code's admission and retries."""
        return await self._call(request, request_timeout, deadline)

    async def _call(self, request: RunCodeRequest, request_timeout: float, deadline: float) -> CallResult:
        payload = request.model_dump_json().encode()
        state = _CallState(deadline=deadline, queue_timeout=self._queue_timeout)
        state.cases = isinstance(request, RunCasesRequest)
        try:
            try:
                # Most calls succeed at once: the retry machinery is only built for those that do not.
                response = await self._attempt(payload, request_timeout, state)
            except _Retryable as first_failure:
                response = await self._retry_after(first_failure, payload, request_timeout, state)
            return CallResult(response, None, None, state.attempts, state.queue_wait, state.http_status)
        except _Retryable as exc:
            outcome = Outcome.DEADLINE_EXCEEDED if state.stopped_by_deadline else exc.outcome
            why = (
                f"the call's deadline of {deadline:g} s left no time for another try"
                if state.stopped_by_deadline
                else f"gave up after {state.attempts} attempts ({state.failures} failures that are not overload)"
            )
            return CallResult(None, f"{exc.reason} ({why})", outcome, state.attempts, state.queue_wait, exc.http_status)
        except _Final as exc:
            return CallResult(None, exc.reason, exc.outcome, state.attempts, state.queue_wait, exc.http_status)
        except _DeadlineReached as exc:
            reason = str(exc) + (f"; the previous try failed: {state.last_failure}" if state.last_failure else "")
            return CallResult(
                None, reason, Outcome.DEADLINE_EXCEEDED, state.attempts, state.queue_wait, state.http_status
            )
        except _QueueTimeout as exc:
            return CallResult(None, str(exc), Outcome.QUEUE_TIMEOUT, 0, state.queue_wait, None)

    async def _retry_after(
        self, first_failure: _Retryable, payload: bytes, request_timeout: float, state: "_CallState"
    ) -> RunCodeResponse:
        """Retry with tenacity; its first 'attempt' replays the failure already met, so its counting and backoff
        are exactly those of a loop that made every attempt itself."""
        pending: Optional[_Retryable] = first_failure

        async def attempt() -> RunCodeResponse:
            nonlocal pending
            if pending is not None:
                failure, pending = pending, None
                raise failure
            return await self._attempt(payload, request_timeout, state)

        def stop(retry_state) -> bool:
            exc = retry_state.outcome.exception()
            if getattr(exc, "http_status", None) not in self._retry.overload_status:
                state.failures += 1
                if state.failures > self._retry.max_retries:
                    return True
            if state.deadline_at is not None and time.monotonic() + retry_state.upcoming_sleep >= state.deadline_at:
                state.stopped_by_deadline = True
                return True
            return False

        backoff = wait_random_exponential(multiplier=self._retry.initial_backoff, max=self._retry.max_backoff)

        def wait(retry_state) -> float:
            exc = retry_state.outcome.exception()
            retry_after = getattr(exc, "retry_after", 0.0)
            # Jitter on top of the server's hint spreads a crowd of rejected calls over the next half interval.
            return max(backoff(retry_state), retry_after * random.uniform(1.0, 1.5))

        retrying = AsyncRetrying(retry=retry_if_exception_type(_Retryable), stop=stop, wait=wait, reraise=True)
        return await retrying(attempt)

    async def _attempt(self, payload: bytes, request_timeout: float, state: "_CallState") -> RunCodeResponse:
        waited_from = time.monotonic()
        slot = self._slot()
        try:
            remaining = state.wait_bound()
            if remaining is None:
                await slot.acquire()
            else:
                await asyncio.wait_for(slot.acquire(), remaining)
        except asyncio.TimeoutError:
            state.queue_wait += time.monotonic() - waited_from
            raise state.out_of_time(f"no worker slot (num_workers={self._max_in_flight}) came free") from None
        try:
            try:
                await self._limiter.acquire(timeout=state.wait_bound())
            except RateLimitTimeout:
                state.queue_wait += time.monotonic() - waited_from
                raise state.out_of_time(f"the rate limit ({self._limiter.rate:g}/s) gave no token") from None
            state.queue_wait += time.monotonic() - waited_from
            state.admitted()
            state.attempts += 1
            url = await self._endpoint()
            if state.cases:
                url = run_cases_endpoint(url)
            timeout = min(request_timeout, state.remaining())
            try:
                status, retry_after, body = await self._post(
                    url, payload, timeout, cut_by_deadline=timeout < request_timeout, deadline=state.deadline
                )
            except _Retryable as exc:
                state.last_failure = exc.reason
                raise
        finally:
            slot.release()
        state.http_status = status
        try:
            return self._verdict(status, retry_after, body, RunCasesResponse if state.cases else RunCodeResponse)
        except _Retryable as exc:
            state.last_failure = exc.reason
            raise

    async def _post(self, url: str, payload: bytes, timeout: float, *, cut_by_deadline: bool, deadline: float):
        try:
            async with self._sessions.get().post(
                url, data=payload, headers=_JSON_HEADERS, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as resp:
                body = await resp.read()
                return resp.status, _retry_after_seconds(resp.headers.get("Retry-After")), body
        except (asyncio.TimeoutError, TimeoutError):
            if cut_by_deadline:
                raise _DeadlineReached(
                    f"the sandbox did not answer within the call's deadline of {deadline:g} s"
                ) from None
            raise _Retryable(Outcome.UNAVAILABLE, f"the sandbox did not answer within {timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise _Retryable(Outcome.UNAVAILABLE, f"could not reach the sandbox at {url}: {exc!r}") from None
        except OSError as exc:
            raise _Retryable(Outcome.UNAVAILABLE, f"could not reach the sandbox at {url}: {exc!r}") from None

    def _verdict(self, status: int, retry_after: float, body: bytes, model: type = RunCodeResponse):
        if status in self._retry.retry_on_status:
            reason = "overloaded" if status in (429, 503) else "gateway error"
            raise _Retryable(
                Outcome.UNAVAILABLE, f"the sandbox answered HTTP {status} ({reason})", status, retry_after=retry_after
            )
        if 400 <= status < 500:
            raise _Final(Outcome.REJECTED, f"HTTP {status}: {_detail(body)}", status)
        if status != 200:
            raise _Final(Outcome.SANDBOX_ERROR, f"the sandbox answered HTTP {status}: {_snippet(body)}", status)
        try:
            response = model.model_validate_json(body)
        except ValidationError:
            raise _Final(
                Outcome.BAD_RESPONSE, f"the sandbox's answer is not Sandbox Fusion JSON: {_snippet(body)!r}", status
            ) from None
        if response.status == "SandboxError":
            reason = f"the sandbox failed internally: {response.message[:_SNIPPET]}"
            raise _Retryable(Outcome.SANDBOX_ERROR, reason, status)
        return response


class _CallState:
    def __init__(self, deadline: float, queue_timeout: Optional[float] = None):
        self.deadline = deadline
        self.deadline_at: Optional[float] = None
        self.queue_timeout = queue_timeout
        self.queue_until = None if queue_timeout is None else time.monotonic() + queue_timeout
        self.attempts = 0
        self.failures = 0
        self.queue_wait = 0.0
        self.http_status: Optional[int] = None
        self.stopped_by_deadline = False
        self.last_failure: Optional[str] = None
        self.cases = False  # a /run_cases call

    def admitted(self) -> None:
        if self.deadline_at is None:
            self.deadline_at = time.monotonic() + self.deadline

    def wait_bound(self) -> Optional[float]:
        """How long the next wait for a slot or token may take: the queue bound before the first request, the
        deadline after it."""
        if self.deadline_at is not None:
            return self.remaining()
        if self.queue_until is None:
            return None
        left = self.queue_until - time.monotonic()
        if left <= 0:
            raise self.out_of_time("the queue did not move")
        return left

    def out_of_time(self, what: str) -> Exception:
        if self.deadline_at is None:
            return _QueueTimeout(
                f"{what} within the queue bound of {self.queue_timeout:g} s (queue_timeout); the call was not sent"
            )
        return _DeadlineReached(f"{what} within the call's deadline of {self.deadline:g} s")

    def remaining(self) -> Optional[float]:
        if self.deadline_at is None:
            return None
        left = self.deadline_at - time.monotonic()
        if left <= 0:
            raise _DeadlineReached(f"the call's deadline of {self.deadline:g} s passed")
        return left
