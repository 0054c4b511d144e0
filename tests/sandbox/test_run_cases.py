"""POST /run_cases: one program, compiled once, run against many cases, each case a sandbox of its own with its own
limits and its own result."""

from __future__ import annotations

import uuid

import httpx
import pytest

pytestmark = pytest.mark.usefixtures("fork_server_ready")


@pytest.fixture(scope="module")
def cases(http: httpx.Client):
    def _cases(**payload) -> dict:
        resp = http.post("/run_cases", json=payload)
        assert resp.status_code == 200, resp.text
        return resp.json()

    return _cases


# Sums its input; on input 7 loops forever, on 8 allocates past any limit; leaves a marker and fails if it finds
# one (so a case that sees an earlier case's files or /tmp fails).
SUM = r'''// %s
#include <bits/stdc++.h>
int main() {
    if (std::ifstream("/tmp/marker").good() || std::ifstream("/workspace/marker").good()) return 9;
    std::ofstream("/tmp/marker") << 1;
    std::ofstream("/workspace/marker") << 1;
    long long n, s = 0, x;
    std::cin >> n;
    if (n == 7) for (;;) {}
    if (n == 8) { std::vector<char*> keep; for (;;) { char* p = new char[1 << 20]; std::memset(p, 1, 1 << 20); keep.push_back(p); } }
    for (long long i = 0; i < n; i++) { std::cin >> x; s += x; }
    std::cout << s << "\n";
}
'''


def test_each_case_its_own_run_and_result(cases):
    body = cases(language="cpp", code=SUM % uuid.uuid4().hex, run_timeout=2, memory_limit_MB=128,
                 cases=[{"stdin": "2 1 2", "expected_output": "3"},
                        {"stdin": "3 1 1 1", "expected_output": "3\n"},
                        {"stdin": "1 5", "expected_output": "6"},  # mismatch
                        {"stdin": "7"},  # timeout
                        {"stdin": "8"},  # out of memory
                        {"stdin": "2 10 20", "expected_output": "30  \n\n"}])  # trailing whitespace ignored (lines)
    assert body["compile_result"]["status"] == "Finished" and body["compile_result"]["return_code"] == 0
    got = body["cases"]
    assert [c["passed"] for c in got] == [True, True, False, None, None, True]
    assert [c["status"] for c in got] == ["Success", "Success", "Success", "Failed", "Failed", "Success"]
    assert got[2]["run_result"]["stdout"] == "5\n"
    assert got[3]["run_result"]["status"] == "TimeLimitExceeded" and got[3]["run_result"]["killed_by"] == "timeout"
    assert got[4]["run_result"]["memory_limit_exceeded"] is True
    assert body["status"] == "Failed" and body["passed"] == 3 and "3/6 cases passed" in body["message"]


def test_compiled_once(cases, http):
    code = SUM % uuid.uuid4().hex
    before = http.get("/v1/stats").json()["compile_cache"]
    body = cases(language="cpp", code=code, cases=[{"stdin": f"1 {i}", "expected_output": str(i)} for i in range(10)])
    after = http.get("/v1/stats").json()["compile_cache"]
    assert body["status"] == "Success" and body["passed"] == 10 and body["message"] == ""
    assert after["stores"] - before["stores"] == 1  # one compile for ten cases
    again = cases(language="cpp", code=code, cases=[{"stdin": "1 4", "expected_output": "4"}])
    assert again["compile_result"]["cached"] is True and again["status"] == "Success"


def test_compare_modes_and_stop_on_failure(cases):
    code = "print(input())"
    exact = cases(language="python", code=code, compare="exact", cases=[{"stdin": "a b", "expected_output": "a b\n"},
                                                                         {"stdin": "a b", "expected_output": "a b"}])
    assert [c["passed"] for c in exact["cases"]] == [True, False]
    tokens = cases(language="python", code=code, compare="tokens", cases=[{"stdin": "a   b", "expected_output": "a b"}])
    assert tokens["cases"][0]["passed"] is True
    stop = cases(language="python", code=code, stop_on_failure=True,
                 cases=[{"stdin": "1", "expected_output": "2"}, {"stdin": "3", "expected_output": "3"}])
    assert stop["cases"][0]["passed"] is False and stop["cases"][1]["skipped"] is True
    assert stop["cases"][1]["run_result"] is None and stop["passed"] == 0


def test_a_compile_error_skips_every_case(cases):
    body = cases(language="cpp", code="int main() { return nope; }", cases=[{"stdin": "1", "expected_output": "1"}] * 3)
    assert body["status"] == "Failed" and body["compile_result"]["return_code"] != 0
    assert all(c["skipped"] and c["passed"] is False for c in body["cases"])


def test_rejected_requests(http):
    assert http.post("/run_cases", json={"language": "cpp", "code": "", "cases": []}).status_code == 422
    assert http.post("/run_cases", json={"language": "nope", "code": "", "cases": [{"stdin": ""}]}).status_code == 422


def test_the_reward_scores_stdio_cases_through_run_cases(sandbox_url):
    import asyncio
    import json

    from agentgym.rewards.sandbox_tests import _score_cases_one_by_one, compute_score, stdio_cases

    truth = {"inputs": ["1 2\n", "5 5\n", "0 0\n"], "outputs": ["3\n", "10\n", "0\n"]}
    good = "```cpp\n#include <bits/stdc++.h>\nint main(){long long a,b;std::cin>>a>>b;std::cout<<a+b<<std::endl;}\n```"
    bad = good.replace("a+b", "a*b")
    kw = dict(sandbox_url=sandbox_url, language="cpp", run_timeout=5)
    ok = asyncio.run(compute_score("code", good, json.dumps(truth), **kw))
    assert ok["score"] == 1.0 and ok["cases_passed"] == 1.0
    wrong = asyncio.run(compute_score("code", bad, truth, stop_on_failure=False, **kw))
    assert wrong["score"] == 0.0 and wrong["cases_passed"] == pytest.approx(1 / 3)  # only 0*0 == 0+0

    async def one_by_one() -> dict:
        import httpx

        from agentgym.tools.sandbox_fusion.wire import RunCasesRequest
        request = RunCasesRequest(code=bad.split("\n", 1)[1].rsplit("```", 1)[0], language="cpp", compile_timeout=5,
                                  run_timeout=5, memory_limit_MB=512, cases=stdio_cases(truth), stop_on_failure=False)
        async with httpx.AsyncClient(timeout=60) as client:
            return await _score_cases_one_by_one(client, request, sandbox_url)

    assert asyncio.run(one_by_one())["cases_passed"] == pytest.approx(1 / 3)  # a server without /run_cases, alike
    assert stdio_cases("assert f(1) == 2") is None and stdio_cases({"inputs": [1], "outputs": []}) is None


def test_the_code_tool_runs_a_rows_cases_through_run_cases(sandbox_url):
    import asyncio

    from agentgym.tools.sandbox_fusion import aclose_http_sessions
    from agentgym.tools.sandbox_fusion.tool import SandboxFusionTool

    async def call() -> tuple[str, dict]:
        tool = SandboxFusionTool({"sandbox_fusion_url": sandbox_url, "enable_global_rate_limit": False})
        iid, _ = await tool.create()
        code = "#include <iostream>\nint main(){long long a,b;std::cin>>a>>b;std::cout<<a+b<<std::endl;}\n"
        response, _, metrics = await tool.execute(
            iid, {"code": code, "language": "cpp"},
            cases=["1 2", {"stdin": "2 2", "expected_output": "5"}, {"stdin": "5 5", "expected_output": "10"}])
        await tool.release(iid)
        await aclose_http_sessions()
        return response.text, metrics

    text, metrics = asyncio.run(call())
    assert text.startswith("Case 1: ") and "\nCase 2: " in text and "\nCase 3: " in text, text
    assert "3\n" in text.split("Case 2:")[0] and "wrong answer" in text.split("Case 2:")[1].split("Case 3:")[0]
    assert "wrong answer" not in text.split("Case 3:")[1]
    assert metrics["outcome"] == "runtime_error"  # the first failing case's (a wrong answer)
