"""HTTP layer: Search-R1's `POST /retrieve` (the API verl's `SearchTool` calls) and `GET /health`.

Request `{"queries": [str, ...], "topk": int | null, "return_scores": bool}`; response `{"result": [...]}` with
one list per query, best first: `{"document": {"id", "contents", ...}, "score": float}` items when
`return_scores` is true, the bare documents otherwise. A query without any word gets an empty list.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from .index import Bm25Index


@dataclass(frozen=True)
class ServerSettings:
    topk: int = 3
    max_topk: int = 100
    max_queries: int = 256
    max_query_chars: int = 4096
    workers: int = field(default_factory=lambda: max(2, os.cpu_count() or 2))


class RetrieveRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    queries: list[str] = Field(min_length=1)
    topk: Optional[int] = Field(None, ge=1)
    return_scores: bool = False


def _readable(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg')}")
    return "; ".join(parts)


def create_app(index: Bm25Index, settings: ServerSettings = ServerSettings()) -> FastAPI:
    executor = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="bm25")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            executor.shutdown(wait=True)
            index.close()

    app = FastAPI(title="agentgym retrieval server", lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={
            "detail": f"bad /retrieve request: {_readable(exc)}. Send "
                      '{"queries": ["your question"], "topk": 3, "return_scores": true}.'})

    def problem(message: str) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": message})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "documents": index.documents, "index": str(index.path)}

    @app.post("/retrieve")
    async def retrieve(request: RetrieveRequest) -> dict[str, Any]:
        topk = request.topk or settings.topk
        if topk > settings.max_topk:
            return problem(f"topk {topk} is above this server's limit of {settings.max_topk}.")
        if len(request.queries) > settings.max_queries:
            return problem(f"{len(request.queries)} queries in one request; this server takes at most "
                           f"{settings.max_queries}. Split the batch.")
        for i, query in enumerate(request.queries):
            if len(query) > settings.max_query_chars:
                return problem(f"queries[{i}] has {len(query)} characters; the limit is {settings.max_query_chars}.")
        loop = asyncio.get_running_loop()
        hits = await asyncio.gather(*(loop.run_in_executor(executor, index.search, q, topk) for q in request.queries))
        if request.return_scores:
            result = [[{"document": doc, "score": score} for doc, score in per_query] for per_query in hits]
        else:
            result = [[doc for doc, _ in per_query] for per_query in hits]
        return {"result": result}

    return app
