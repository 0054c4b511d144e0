import json
import sqlite3

import pytest

from retrieval_server import Bm25Index, CorpusError, build_index, fts_query
from tests.retrieval.conftest import DOCS, write_corpus


def test_fts5_is_compiled_into_sqlite():
    sqlite3.connect(":memory:").execute("CREATE VIRTUAL TABLE t USING fts5(x)")


@pytest.mark.parametrize("text", ['"capital AND (NEAR', "capital* OR -Germany ^x", "NOT capital:Germany"])
def test_query_syntax_from_the_model_is_searched_as_words(corpus, tmp_path, text):
    index = Bm25Index(build_index(corpus, tmp_path / "i.sqlite").path)
    hits = index.search(text, 4)
    assert hits and hits[0][0]["id"] in {"berlin", "paris", "rome"}


def test_query_words():
    assert fts_query("What is the capital of France?") == '"what" OR "capital" OR "france"'
    assert fts_query("the of") == '"the" OR "of"'
    assert fts_query("?!  ...") is None


def test_bm25_ranks_the_document_with_the_rare_words_first(corpus, tmp_path):
    index = Bm25Index(build_index(corpus, tmp_path / "i.sqlite").path)
    hits = index.search("capital of Germany", 3)
    assert [doc["id"] for doc, _ in hits][0] == "berlin"
    assert len(hits) == 3
    assert hits[0][1] > hits[1][1] > 0
    assert index.search("founding", 3)[0][0]["id"] == "berlin"  # Porter stemming: founding ~ founded
    assert index.search("zeppelin", 3) == []


def test_documents_come_back_as_in_the_corpus(corpus, tmp_path):
    index = Bm25Index(build_index(corpus, tmp_path / "i.sqlite").path)
    rome = index.search("Italy", 1)[0][0]
    assert rome == {**DOCS[2], "contents": "Rome\nRome is the capital of Italy."}
    assert index.search("river", 1)[0][0]["id"] == "7"


def test_index_is_reused_until_the_corpus_changes(corpus, tmp_path):
    first = build_index(corpus, tmp_path / "i.sqlite")
    assert not first.reused and first.documents == 4
    assert build_index(corpus, tmp_path / "i.sqlite").reused
    write_corpus(corpus, DOCS[:2])
    again = build_index(corpus, tmp_path / "i.sqlite")
    assert not again.reused and again.documents == 2
    assert Bm25Index(again.path).search("Italy", 3) == []


@pytest.mark.parametrize("line, message", [
    ('{"id": "x", "contents": "ok"}\n{"id": "y", "contents": ', "line 2: not valid JSON"),
    ('["a list"]', "line 1: expected a JSON object"),
    ('{"id": "x"}', 'line 1: no text to index'),
    ('{"id": "x", "contents": "a"}\n{"id": "x", "contents": "b"}', "id 'x' appears twice"),
    ('{"id": {"a": 1}, "contents": "a"}', '"id" must be a string or an integer'),
    ("\n\n", "has no documents"),
])
def test_bad_corpus_lines_are_named(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(line)
    with pytest.raises(CorpusError, match=message.replace("(", r"\(")):
        build_index(path, tmp_path / "i.sqlite")
    assert not (tmp_path / "i.sqlite").exists()


def test_failed_rebuild_keeps_the_old_index(corpus, tmp_path):
    built = build_index(corpus, tmp_path / "i.sqlite")
    corpus.write_text(corpus.read_text() + "{broken\n")
    with pytest.raises(CorpusError, match="line 5"):
        build_index(corpus, tmp_path / "i.sqlite")
    assert Bm25Index(built.path).search("Italy", 1)[0][0]["id"] == "rome"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_leaving_out_common_words_keeps_the_full_queries_ranking(tmp_path):
    """Words in half the documents or more are skipped when the rest find topk documents; the order is FTS5's."""
    docs = [{"id": str(i), "contents": f"Doc {i}\ncommon filler text {'rare' if i % 7 == 0 else 'other'} {i}"}
            for i in range(40)]
    index = Bm25Index(build_index(write_corpus(tmp_path / "c.jsonl", docs), tmp_path / "i.sqlite").path)
    assert index.document_frequency("common") == 40 and index.document_frequency("rare") == 6
    full = index._ranked(["common", "filler", "rare"], 4)
    hits = index.search("common filler rare", 4)
    assert [d["id"] for d, _ in hits] == [json.loads(doc)["id"] for doc, _ in full]
    assert all(d["contents"].count("rare") for d, _ in hits)
    assert len(index.search("common filler rare", 10)) == 10  # fewer than 10 rare ones: filled up
