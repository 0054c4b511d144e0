"""Retrieval server latency and throughput on a generated corpus.

    python benchmarks/retrieval_bench.py [--docs 100000] [--concurrency 1 64] [--seconds 20] [--workers N]

Writes a corpus of `--docs` documents (a title and 60 words drawn by Zipf's law from a 50,000-word vocabulary:
the English stop words at the top ranks, made-up words below, so common words match many documents as in real
text), indexes it (timed), starts
`python -m retrieval_server` on a free loopback port and keeps `--concurrency` clients busy for `--seconds`,
each sending one query (3 words of a random document, as a model's query would be) per `/retrieve` request with
topk 3. Prints requests/s and p50/p99 latency per concurrency level, HTTP included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retrieval_server.index import STOP_WORDS, build_index  # noqa: E402
from retrieval_server.launch import RetrievalServerProcess  # noqa: E402


def make_vocabulary(rng: random.Random, size: int) -> list[str]:
    letters = "bcdfghklmnprstvz"
    vowels = "aeiou"
    words: dict[str, None] = {}
    while len(words) < size:
        words.setdefault("".join(rng.choice(letters) + rng.choice(vowels) for _ in range(rng.randint(2, 4))), None)
    return list(words)


def write_corpus(path: Path, docs: int, seed: int = 0) -> list[list[str]]:
    """The corpus file; returns each document's words, to draw queries from. Word ranks follow Zipf's law and, as
    in English, the most frequent ranks are the stop words."""
    rng = random.Random(seed)
    vocab = sorted(STOP_WORDS) + make_vocabulary(rng, 50_000 - len(STOP_WORDS))
    probs = 1.0 / np.arange(1, len(vocab) + 1)
    draws = np.random.default_rng(seed).choice(len(vocab), size=(docs, 60), p=probs / probs.sum())
    words_of = []
    with path.open("w") as handle:
        for i in range(docs):
            title = " ".join(rng.sample(vocab[1000:], 2)).title()
            words = [vocab[j] for j in draws[i]]
            words_of.append(title.lower().split() + words)
            handle.write(json.dumps({"id": str(i), "contents": f"{title}\n{' '.join(words)}."}) + "\n")
    return words_of


async def run_level(url: str, queries: list[str], concurrency: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds
    counter = iter(range(10**9))
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                query = queries[next(counter) % len(queries)]
                started = time.perf_counter()
                async with session.post(url, json={"queries": [query], "topk": 3, "return_scores": True}) as resp:
                    body = await resp.json()
                if resp.status != 200 or len(body["result"]) != 1:
                    errors += 1
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, default=100_000)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--workers", type=int, default=None, help="the server's search threads (default: its own)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        started = time.perf_counter()
        words_of = write_corpus(corpus, args.docs)
        print(f"corpus: {args.docs} documents, {corpus.stat().st_size / 1e6:.1f} MB, "
              f"written in {time.perf_counter() - started:.1f}s")
        info = build_index(corpus, Path(tmp) / "index.sqlite")
        print(f"index: built in {info.built_seconds:.1f}s, {info.path.stat().st_size / 1e6:.1f} MB")
        rng = random.Random(1)
        queries = [" ".join(rng.sample(words_of[rng.randrange(len(words_of))], 3)) for _ in range(5000)]
        extra = ["--workers", str(args.workers)] if args.workers else []
        results = []
        with RetrievalServerProcess(corpus, index=info.path, extra_args=extra) as server:
            for concurrency in args.concurrency:
                asyncio.run(run_level(server.retrieve_url, queries, concurrency, 2.0))  # warm-up
                result = asyncio.run(run_level(server.retrieve_url, queries, concurrency, args.seconds))
                results.append(result)
                print(f"concurrency {concurrency:>3}: {result['requests_per_s']:7.1f} queries/s, "
                      f"p50 {result['p50_ms']:7.1f} ms, p99 {result['p99_ms']:7.1f} ms, "
                      f"{result['requests']} requests, {result['errors']} errors", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"docs": args.docs, "index_seconds": info.built_seconds,
                                         "levels": results}, indent=2))


if __name__ == "__main__":
    main()
