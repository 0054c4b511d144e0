import subprocess
import sys

import httpx
import pytest


def post(server, body, **kwargs):
    return httpx.post(server.retrieve_url, json=body, timeout=30, **kwargs)


def test_retrieve_with_scores_is_search_r1s_layout(server):
    response = post(server, {"queries": ["capital of Germany", "river through Paris"], "topk": 2,
                             "return_scores": True})
    assert response.status_code == 200
    result = response.json()["result"]
    assert len(result) == 2 and all(len(per_query) == 2 for per_query in result)
    top = result[0][0]
    assert set(top) == {"document", "score"} and top["score"] > result[0][1]["score"]
    assert top["document"] == {"id": "berlin",
                               "contents": "Berlin\nBerlin is the capital of Germany. It was founded in 1237."}
    assert result[1][0]["document"]["id"] == "7"


def test_without_scores_documents_come_bare_and_topk_defaults_to_the_servers(server):
    result = post(server, {"queries": ["capital"]}).json()["result"]
    assert len(result[0]) == 3 and all("contents" in doc and "score" not in doc for doc in result[0])


def test_query_without_words_or_hits_gets_an_empty_list(server):
    result = post(server, {"queries": ["?!", "zeppelin", "Paris"], "topk": 1, "return_scores": True}).json()["result"]
    assert result[0] == [] and result[1] == [] and result[2][0]["document"]["id"] in {"paris", "7"}


@pytest.mark.parametrize("body, message", [
    ({"queries": "capital"}, "queries: Input should be a valid list"),
    ({"queries": []}, "queries: List should have at least 1 item"),
    ({"queries": ["a", 3]}, "queries.1: Input should be a valid string"),
    ({"queries": ["a"], "topk": 0}, "topk: Input should be greater than or equal to 1"),
    ({"queries": ["a"], "topk": 50}, "topk 50 is above this server's limit of 3"),
])
def test_bad_requests_say_what_is_wrong(server, body, message):
    response = post(server, body)
    assert response.status_code == 422
    assert message in response.json()["detail"]


def test_health(server):
    body = httpx.get(server.base_url + "/health", timeout=30).json()
    assert body["status"] == "ok" and body["documents"] == 4


def test_cli_refuses_a_bad_corpus_with_its_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "contents": "fine"}\nnot json\n')
    done = subprocess.run([sys.executable, "-m", "retrieval_server", "--corpus", str(bad), "--port", "0"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert f"{bad}, line 2: not valid JSON" in done.stderr


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux-only")
def test_server_started_by_a_killed_process_goes_with_it(tmp_path):
    import os
    import signal
    import time

    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": 1, "contents": "T\\nbody"}\n')
    script = ("import sys, time; from retrieval_server.launch import RetrievalServerProcess as P; "
              f"s = P({str(corpus)!r}).start(); print(s.proc.pid, flush=True); time.sleep(600)")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.getcwd()})
    child = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        try:
            os.waitpid(child, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the server outlived the process that started it")
