"""`python -m retrieval_server --corpus docs.jsonl [--index PATH] [--host H] [--port N] [--topk K] [--workers W]`.

Indexes the corpus (or reuses an index of the same corpus), then serves `POST /retrieve`. Prints
`retrieval_server ready at http://H:N` once the socket accepts connections (`--port 0` picks a free port).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Optional, Sequence

import uvicorn

from .app import ServerSettings, create_app
from .corpus import CorpusError
from .index import Bm25Index, build_index


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m retrieval_server",
                                description="Search-R1 compatible BM25 retrieval server over a JSON-lines corpus")
    p.add_argument("--corpus", required=True, type=Path,
                   help='JSON lines, one document each: {"id": "1", "contents": "Title\\nText"}')
    p.add_argument("--index", type=Path, default=None,
                   help="index file (default: the corpus path + .bm25.sqlite); reused while the corpus is unchanged")
    p.add_argument("--rebuild", action="store_true", help="re-index even if the index matches the corpus")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed in the ready line)")
    p.add_argument("--topk", type=int, default=3, help="results per query when a request gives no topk")
    p.add_argument("--max-topk", type=int, default=100)
    p.add_argument("--workers", type=int, default=None, help="search threads (default: CPU count, at least 2)")
    p.add_argument("--log-level", default="warning")
    return p.parse_args(argv)


async def serve(app, host: str, port: int, log_level: str) -> int:
    config = uvicorn.Config(app, host=host, port=port, loop="asyncio", log_level=log_level, access_log=False,
                            timeout_keep_alive=30, backlog=2048)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    if server.started:
        bound = server.servers[0].sockets[0].getsockname()[1]
        print(f"retrieval_server ready at http://{host}:{bound}", flush=True)
    await task
    return 0 if server.started else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    index_path = args.index or args.corpus.with_name(args.corpus.name + ".bm25.sqlite")
    try:
        info = build_index(args.corpus, index_path, rebuild=args.rebuild)
    except CorpusError as exc:
        print(f"retrieval_server: {exc}", file=sys.stderr, flush=True)
        return 2
    how = "reused" if info.reused else f"built in {info.built_seconds:.1f}s"
    print(f"retrieval_server: {info.documents} documents from {info.corpus}, index {info.path} ({how})", flush=True)
    defaults = ServerSettings()
    settings = ServerSettings(topk=args.topk, max_topk=args.max_topk, workers=args.workers or defaults.workers)
    return asyncio.run(serve(create_app(Bm25Index(info.path), settings), args.host, args.port, args.log_level))


if __name__ == "__main__":
    sys.exit(main())
