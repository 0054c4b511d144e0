"""The BM25 index: one SQLite file with an FTS5 table (Porter stemming, Unicode word splitting).

SQLite's FTS5 ranks with Okapi BM25 (k1 = 1.2, b = 0.75), the ranking Search-R1's BM25 retriever (Pyserini)
uses. A query is the OR of its words (English stop words dropped unless nothing else is left), so word order,
punctuation and FTS5 syntax in a model's query can never turn into a syntax error. The index file records the
corpus's size and SHA-256: a changed corpus is re-indexed on the next start, an unchanged one is reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .corpus import CorpusError, read_corpus

SCHEMA_VERSION = "1"
TOKENIZER = "porter unicode61 remove_diacritics 2"
MAX_QUERY_WORDS = 64
# Lucene's default English stop set (the analyzer behind Pyserini's BM25).
STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these "
    "they this to was will with".split()
)
_WORD = re.compile(r"\w+", re.UNICODE)


def query_words(text: str) -> list[str]:
    """The words of free text that a search uses: lower-cased, each once, stop words dropped unless nothing else
    is left, at most MAX_QUERY_WORDS."""
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(text)))
    content = [w for w in words if w not in STOP_WORDS] or words
    return content[:MAX_QUERY_WORDS]


def fts_query(text: str | list[str]) -> Optional[str]:
    """The FTS5 MATCH expression for free text (or its words), or None when it has no word to search for."""
    words = query_words(text) if isinstance(text, str) else text
    return " OR ".join(f'"{w}"' for w in words) or None


@dataclass(frozen=True)
class IndexInfo:
    path: Path
    corpus: str
    documents: int
    corpus_sha256: str
    built_seconds: float
    reused: bool


def _corpus_fingerprint(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return path.stat().st_size, digest.hexdigest()


def _read_meta(index_path: Path) -> dict[str, str]:
    try:
        with sqlite3.connect(f"file:{index_path}?mode=ro", uri=True) as conn:
            return dict(conn.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.Error:
        return {}


def build_index(corpus: str | Path, index_path: str | Path, *, rebuild: bool = False) -> IndexInfo:
    """Index `corpus` into `index_path`, unless the file there already indexes this exact corpus.

    Built into a temporary file next to the target and renamed into place, so a crash never leaves a
    half-built index that a later start would trust.
    """
    corpus, index_path = Path(corpus), Path(index_path)
    if not corpus.is_file():
        raise CorpusError(f"corpus file {corpus} does not exist (give the path of a JSON-lines file).")
    size, sha = _corpus_fingerprint(corpus)
    meta = _read_meta(index_path) if index_path.exists() and not rebuild else {}
    if meta.get("schema") == SCHEMA_VERSION and meta.get("corpus_sha256") == sha and meta.get("corpus_size") == str(size):
        return IndexInfo(index_path, str(corpus), int(meta["documents"]), sha, 0.0, reused=True)
    if not index_path.parent.is_dir() or not os.access(index_path.parent, os.W_OK):
        raise CorpusError(f"cannot write the index to {index_path}: its directory is missing or read-only. "
                          "Pass --index PATH in a writable directory.")
    started = time.perf_counter()
    tmp = index_path.with_name(f".{index_path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        conn = sqlite3.connect(tmp)
        try:
            conn.executescript(
                "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
                "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                f"CREATE VIRTUAL TABLE docs USING fts5(contents, doc UNINDEXED, tokenize='{TOKENIZER}');"
            )
            seen: dict[str, int] = {}
            count = 0
            batch: list[tuple[int, str, str]] = []
            for doc in read_corpus(corpus):
                if doc.id in seen:
                    raise CorpusError(f"{corpus}: document id {doc.id!r} appears twice (documents {seen[doc.id] + 1} "
                                      f"and {count + 1}). Give every line a distinct id.")
                seen[doc.id] = count
                batch.append((count, doc.contents, json.dumps(doc.as_result(), ensure_ascii=False)))
                count += 1
                if len(batch) >= 5000:
                    conn.executemany("INSERT INTO docs(rowid, contents, doc) VALUES (?, ?, ?)", batch)
                    batch.clear()
            conn.executemany("INSERT INTO docs(rowid, contents, doc) VALUES (?, ?, ?)", batch)
            if count == 0:
                raise CorpusError(f"{corpus}: the corpus has no documents.")
            conn.execute("INSERT INTO docs(docs) VALUES ('optimize')")
            conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("schema", SCHEMA_VERSION), ("corpus", str(corpus)), ("corpus_size", str(size)),
                ("corpus_sha256", sha), ("documents", str(count)),
            ])
            conn.commit()
        finally:
            conn.close()
        os.replace(tmp, index_path)
    finally:
        tmp.unlink(missing_ok=True)
    return IndexInfo(index_path, str(corpus), count, sha, time.perf_counter() - started, reused=False)


class Bm25Index:
    """Read-only searches of a built index; one SQLite connection per calling thread (SQLite releases the GIL
    while it searches, so threads search in parallel)."""

    def __init__(self, index_path: str | Path):
        self.path = Path(index_path)
        meta = _read_meta(self.path)
        if meta.get("schema") != SCHEMA_VERSION:
            raise CorpusError(f"{self.path} is not a retrieval index of this version; build it with build_index().")
        self.documents = int(meta["documents"])
        self._df: dict[str, int] = {}
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def document_frequency(self, word: str) -> int:
        """How many documents contain `word` (after the index's stemming); cached, the corpus never changes."""
        count = self._df.get(word)
        if count is None:
            count = self._connection().execute("SELECT count(*) FROM docs WHERE docs MATCH ?", (f'"{word}"',)).fetchone()[0]
            self._df[word] = count
        return count

    def search(self, query: str, topk: int) -> list[tuple[dict[str, Any], float]]:
        """The `topk` best documents for `query` with their BM25 scores (higher is better), best first.

        Words in half the documents or more are left out first: FTS5 gives them an IDF of 1e-6 (BM25's IDF is
        negative there), so they cannot change the order, but matching them would score most of the corpus. Only
        when the other words find fewer than `topk` documents does the search run with every word.
        """
        words = query_words(query)
        if not words:
            return []
        frequency = {w: self.document_frequency(w) for w in words}
        useful = [w for w in words if 0 < 2 * frequency[w] < self.documents]
        rows = self._ranked(useful, topk) if useful else []
        if len(rows) < topk and len(useful) < len(words):
            rows = self._ranked(words, topk)  # too few hits: fill up with what only the common words match
        return [(json.loads(doc), -score) for doc, score in rows]

    def _ranked(self, words: list[str], topk: int) -> list[tuple[str, float]]:
        return self._connection().execute(
            "SELECT doc, bm25(docs) FROM docs WHERE docs MATCH ? ORDER BY bm25(docs) LIMIT ?", (fts_query(words), topk)
        ).fetchall()

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
