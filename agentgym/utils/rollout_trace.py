"""`rollout_trace_op`, at the path verl's tools import it from (`verl.utils.rollout_trace`).

verl sends the spans to a tracing backend (weave, mlflow) when one is configured. Here every decorated call made
while a tool call runs becomes a span in that call's tool metrics (`trace`), so it lands in the trajectory: the
method, when it started, how long it took, its arguments and, if it raised, the error.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import time
from contextvars import ContextVar
from typing import Any, Callable, Iterator, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_SPANS: ContextVar[list[dict[str, Any]] | None] = ContextVar("agentgym_rollout_trace_spans", default=None)
_MAX_TEXT = 2000


@contextlib.contextmanager
def recording_spans() -> Iterator[list[dict[str, Any]]]:
    """Collect the spans of decorated calls made inside the block (and in tasks it starts)."""
    spans: list[dict[str, Any]] = []
    token = _SPANS.set(spans)
    try:
        yield spans
    finally:
        _SPANS.reset(token)


def _plain(value: Any, depth: int = 0) -> Any:
    """Arguments as JSON-ready values, so trajectories stay writable whatever a tool is passed."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value if len(value) <= _MAX_TEXT else value[:_MAX_TEXT] + f"...[{len(value) - _MAX_TEXT} more chars]"
    if depth < 4 and isinstance(value, dict):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if depth < 4 and isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    return _plain(repr(value))


def _inputs(signature: inspect.Signature, args: tuple, kwargs: dict) -> dict[str, Any]:
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return {"args": _plain(list(args[1:])), "kwargs": _plain(kwargs)}
    arguments = dict(bound.arguments)
    arguments.pop("self", None)
    for name, param in signature.parameters.items():
        if param.kind is inspect.Parameter.VAR_KEYWORD and name in arguments:
            arguments.update(arguments.pop(name))
    return _plain(arguments)


def _record(func: Callable, inputs: dict[str, Any], started_at: float, started: float, error: BaseException | None) -> None:
    spans = _SPANS.get()
    if spans is None:
        return
    spans.append({
        "op": func.__qualname__,
        "started_at": started_at,
        "duration_s": time.perf_counter() - started,
        "inputs": inputs,
        "error": None if error is None else f"{type(error).__name__}: {error}",
    })


def rollout_trace_op(func: F) -> F:
    """Record each call of a tool method (async or not) as a span of the tool call it runs in."""
    signature = inspect.signature(func)

    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            if _SPANS.get() is None:
                return await func(*args, **kwargs)
            inputs, started_at, started = _inputs(signature, args, kwargs), time.time(), time.perf_counter()
            try:
                result = await func(*args, **kwargs)
            except BaseException as exc:
                _record(func, inputs, started_at, started, exc)
                raise
            _record(func, inputs, started_at, started, None)
            return result

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _SPANS.get() is None:
            return func(*args, **kwargs)
        inputs, started_at, started = _inputs(signature, args, kwargs), time.time(), time.perf_counter()
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            _record(func, inputs, started_at, started, exc)
            raise
        _record(func, inputs, started_at, started, None)
        return result

    return wrapper  # type: ignore[return-value]
