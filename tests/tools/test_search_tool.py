"""SearchTool against the real retrieval server on loopback (and small aiohttp servers for failure answers)."""

import asyncio
import json
import socket
import time
from pathlib import Path

import pytest
from aiohttp import web

from agentgym.errors import ConfigError
from agentgym.tools.registry import build_tools, load_tool_specs
from agentgym.tools.sandbox_fusion import aclose_http_sessions
from agentgym.tools.search import SearchTool
from retrieval_server.launch import RetrievalServerProcess

REPO = Path(__file__).resolve().parents[2]
DOCS = [
    {"id": "1", "contents": "Berlin\nBerlin is the capital of Germany.\nIt was founded in 1237."},
    {"id": "2", "contents": "Paris\nParis is the capital of France."},
    {"id": "3", "contents": "Seine\nThe Seine flows through Paris."},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    corpus = tmp_path_factory.mktemp("search") / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    with RetrievalServerProcess(corpus, extra_args=["--max-topk", "5"]) as running:
        yield running


def tool(url, **config):
    return SearchTool({"retrieval_service_url": url, "enable_global_rate_limit": False, **config}, None)


async def call(search, params):
    try:
        response, reward, metrics = await search.execute("i", params)
    finally:
        await aclose_http_sessions()
    return json.loads(response.text)["result"], metrics


async def test_results_are_formatted_as_verl_does(server):
    result, metrics = await call(tool(server.retrieve_url, topk=2), {"query_list": ["capital of Germany"]})
    assert result == ("Doc 1 (Title: Berlin)\nBerlin is the capital of Germany.\nIt was founded in 1237.\n\n"
                      "Doc 2 (Title: Paris)\nParis is the capital of France.")
    assert metrics["status"] == "success" and metrics["total_results"] == 2 and metrics["query_count"] == 1
    assert metrics["api_request_error"] is None


async def test_several_queries_are_separated_and_an_empty_one_says_so(server):
    result, metrics = await call(tool(server.retrieve_url, topk=1),
                                 {"query_list": ["Seine river", "zeppelin", "France"]})
    assert result == ("Doc 1 (Title: Seine)\nThe Seine flows through Paris.\n---\n"
                      "No search results found for 'zeppelin'.\n---\n"
                      "Doc 1 (Title: Paris)\nParis is the capital of France.")
    assert metrics["total_results"] == 2


async def test_nothing_found(server):
    result, metrics = await call(tool(server.retrieve_url), {"query_list": ["zeppelin airship"]})
    assert result == "No search results found." and metrics["status"] == "no_results"


@pytest.mark.parametrize("params, message", [
    ({}, "Error: 'query_list' is missing, empty, or not a list"),
    ({"query_list": []}, "Error: 'query_list' is missing, empty, or not a list"),
    ({"query_list": "Berlin"}, "Error: 'query_list' is missing, empty, or not a list"),
    ({"query_list": ["Berlin", 3]}, "query_list[1] is 3; every query must be a non-empty string"),
    ({"query_list": ["  "]}, "query_list[0] is \"  \"; every query must be a non-empty string"),
    ({"query_list": ["?!"]}, "query_list[0] ('?!') has no words to search for"),
    ({"query_list": ["a"] * 17}, "17 queries in one call; at most 16"),
])
async def test_bad_queries_get_a_clear_message(server, params, message):
    result, metrics = await call(tool(server.retrieve_url), params)
    assert message in result and metrics["status"] == "bad_query"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_unreachable_server_is_a_message_after_retries():
    url = f"http://127.0.0.1:{free_port()}/retrieve"
    result, metrics = await call(tool(url, max_retries=1, timeout=5), {"query_list": ["Berlin"]})
    assert result.startswith(f"Search error: the retrieval service at {url} is unreachable")
    assert result.endswith("(gave up after 2 attempts).")
    assert metrics["status"] == "api_error" and "unreachable" in metrics["api_request_error"]


async def test_a_refused_request_shows_the_servers_reason(server):
    result, metrics = await call(tool(server.retrieve_url, topk=50), {"query_list": ["Berlin"]})
    assert result == (f"Search error: the retrieval service at {server.retrieve_url} refused the request (HTTP 422): "
                      "topk 50 is above this server's limit of 5.")


async def serve(handler):
    app = web.Application()
    app.router.add_post("/retrieve", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}"


async def test_overload_answers_are_retried():
    answers = [web.json_response({"detail": "busy"}, status=503),
               web.json_response({"result": [[{"document": {"id": "x", "contents": "T\nbody"}, "score": 1.0}]]})]
    seen = []

    async def handler(request):
        seen.append(await request.json())
        return answers[len(seen) - 1]

    runner, base = await serve(handler)
    try:
        result, metrics = await call(tool(base), {"query_list": ["q"]})  # a base URL gets /retrieve appended
    finally:
        await runner.cleanup()
    assert result == "Doc 1 (Title: T)\nbody" and len(seen) == 2
    assert seen[0] == {"queries": ["q"], "topk": 3, "return_scores": True}


@pytest.mark.parametrize("body, message", [
    (b"<html>oops</html>", "answered with something other than JSON: '<html>oops</html>'"),
    (b'{"hits": []}', "answered without a `result` key"),
    (b'{"result": []}', "answered without one result list per query"),
    (b'{"result": [[{"document": {"id": 1}}]]}', "result 1 has no `contents` string"),
])
async def test_answers_in_another_layout_are_explained(body, message):
    async def handler(request):
        return web.Response(body=body, content_type="application/json")

    runner, base = await serve(handler)
    try:
        result, metrics = await call(tool(base + "/retrieve"), {"query_list": ["q"]})
    finally:
        await runner.cleanup()
    assert result.startswith("Search error: ") and message in result
    assert metrics["status"] in {"api_error", "processing_error"}


async def test_slow_server_times_out_with_a_message():
    async def handler(request):
        await asyncio.sleep(5)
        return web.json_response({"result": [[]]})

    runner, base = await serve(handler)
    try:
        started = time.monotonic()
        result, _ = await call(tool(base, timeout=0.5, max_retries=3), {"query_list": ["q"]})
        elapsed = time.monotonic() - started
    finally:
        await runner.cleanup()
    assert "did not answer within" in result and elapsed < 4


async def test_rate_limit_spaces_the_requests(server):
    search = tool(server.retrieve_url, rate_limit=5, burst=1)
    started = time.monotonic()
    try:
        await asyncio.gather(*(search.execute("i", {"query_list": ["Berlin"]}) for _ in range(4)))
    finally:
        await aclose_http_sessions()
    assert time.monotonic() - started >= 0.55  # 3 waits of 0.2 s, less the clock's rounding


@pytest.mark.parametrize("config, message", [
    ({}, "retrieval_service_url is required"),
    ({"retrieval_service_url": "localhost:8000"}, "must be an http:// or https:// URL"),
    ({"retrieval_service_url": "http://h/retrieve", "topk": 0}, "topk: Input should be greater than or equal to 1"),
    ({"retrieval_service_url": "http://h/retrieve", "top_k": 3}, "unknown key 'top_k'"),
])
def test_bad_config_is_a_config_error(config, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        SearchTool(config, None)


def test_verl_keys_and_class_path(tmp_path):
    yaml = (REPO / "tool_configs/search_tool.yaml").read_text().replace(
        "agentgym.tools.search.SearchTool", "verl.tools.search_tool.SearchTool").replace("timeout: 30", "default_timeout: 7")
    (tmp_path / "tools.yaml").write_text(yaml)
    search = build_tools(load_tool_specs(tmp_path / "tools.yaml"))["search"]
    assert isinstance(search, SearchTool)
    assert search.settings.timeout == 7 and search.settings.topk == 3
    assert search.settings.retrieval_service_url == "http://127.0.0.1:8000/retrieve"


async def test_a_list_of_servers_skips_a_dead_one_and_retries_elsewhere(server):
    dead = f"http://127.0.0.1:{free_port()}/retrieve"
    search = tool([dead, server.retrieve_url], topk=1, max_retries=1)
    try:
        # Two at once: least outstanding gives each server one, so one call surely meets the dead server first.
        answers = await asyncio.gather(*(search.execute("i", {"query_list": ["Paris"]}) for _ in range(2)))
        answers += [await search.execute("i", {"query_list": ["Paris"]}) for _ in range(3)]
    finally:
        await aclose_http_sessions()
    assert all(json.loads(r.text)["result"].startswith("Doc 1 (Title: Paris)") for r, _, _ in answers)
    snap = search.fleet.snapshot()
    assert (snap[dead]["in_rotation"], snap[dead]["requests"], snap[dead]["ejections"]) == (False, 1, 1)
    assert snap[server.retrieve_url]["requests"] == 5


def test_a_server_named_twice_in_the_list_is_a_config_error():
    with pytest.raises(ConfigError, match="names a server twice"):
        tool(["http://h:1", "http://h:1/retrieve"])
