import json
from pathlib import Path

import pytest

from retrieval_server.launch import RetrievalServerProcess

DOCS = [
    {"id": "paris", "contents": "Paris\nParis is the capital of France, on the Seine."},
    {"id": "berlin", "contents": "Berlin\nBerlin is the capital of Germany. It was founded in 1237."},
    {"id": "rome", "title": "Rome", "text": "Rome is the capital of Italy.", "url": "https://example.org/rome"},
    {"id": 7, "contents": "Seine\nThe Seine is a river that flows through Paris."},
]


def write_corpus(path: Path, docs=DOCS) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "corpus.jsonl")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    path = write_corpus(tmp_path_factory.mktemp("retrieval") / "corpus.jsonl")
    with RetrievalServerProcess(path, extra_args=["--max-topk", "3"]) as running:
        yield running
