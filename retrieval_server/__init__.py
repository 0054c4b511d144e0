"""A Search-R1 compatible retrieval service (`POST /retrieve`) over a JSONL corpus, backed by SQLite FTS5 BM25."""

from .corpus import CorpusError, Document, read_corpus
from .index import Bm25Index, IndexInfo, build_index, fts_query, query_words

__all__ = ["Bm25Index", "CorpusError", "Document", "IndexInfo", "build_index", "fts_query", "query_words", "read_corpus"]
