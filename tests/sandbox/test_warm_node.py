"""The warm node (a started node waiting in each prepared run): each run's node is its own, in that run's sandbox,
unprivileged, under that request's limits; nothing of one run reaches the next."""

from __future__ import annotations

import json
import time

import httpx
import pytest

pytestmark = pytest.mark.usefixtures("fork_server_ready")

LOADER = "/opt/sandbox-node/node_loader.js"


def _wait_warm(http: httpx.Client) -> None:
    """Until a prepared run with a started node is ready (the pool refills in the background)."""
    deadline = time.monotonic() + 60
    while True:
        pool = http.get("/v1/stats").json()["node_pool"]
        assert pool is not None, "the warm node pool did not start: see the server's log"
        if pool["ready"] > 0:
            return
        assert time.monotonic() < deadline, pool
        time.sleep(0.05)


PLANT = r'''
const fs = require("fs"), cp = require("child_process");
for (const d of ["/tmp", "/workspace", "/dev/shm"]) fs.writeFileSync(d + "/leak", "left behind");
cp.spawn("sleep", ["300"], {detached: true, stdio: "ignore"}).unref();
globalThis.leaked = 1;
console.log("planted");
'''

CHECK = r'''
const fs = require("fs");
const status = fs.readFileSync("/proc/self/status", "utf8");
const field = (name) => status.split("\n").find((l) => l.startsWith(name + ":")).split(/\s+/)[1];
const limits = fs.readFileSync("/proc/self/limits", "utf8").split("\n").find((l) => l.startsWith("Max cpu time"));
console.log(JSON.stringify({
  cmdline: fs.readFileSync("/proc/self/cmdline", "utf8"),
  init: fs.readFileSync("/proc/1/cmdline", "utf8"),
  pids: fs.readdirSync("/proc").filter((p) => /^\d+$/.test(p)).length,
  files: ["/tmp/leak", "/workspace/leak", "/dev/shm/leak"].filter((p) => fs.existsSync(p)),
  workspace: fs.readdirSync("/workspace"), leaked: typeof globalThis.leaked,
  capEff: field("CapEff"), noNewPrivs: field("NoNewPrivs"), uid: field("Uid"), cpu: limits.split(/\s+/)[3],
  stdin: fs.readFileSync(0, "utf8"), argv: process.argv.slice(1),
}));
'''


def test_nothing_of_one_warm_run_reaches_the_next(run, http):
    for _ in range(3):
        _wait_warm(http)
        planted = run(language="nodejs", code=PLANT)
        assert planted["run_result"]["stdout"] == "planted\n", planted
        _wait_warm(http)
        out = run(language="nodejs", code=CHECK, stdin="from stdin", args=["a", "b"], run_timeout=3)
        assert out["status"] == "Success", out
        seen = json.loads(out["run_result"]["stdout"])
        assert LOADER in seen["cmdline"], seen  # it ran in a warm node
        assert seen["init"].startswith("python3\0-\0")  # child of the run's own init, pid 1 of its namespace
        assert seen["pids"] == 2, seen  # that init and this node: nothing of the planting run
        assert seen["files"] == [] and seen["workspace"] == ["main.js"] and seen["leaked"] == "undefined"
        assert int(seen["capEff"], 16) == 0 and seen["noNewPrivs"] == "1"
        assert seen["uid"] != "0" and seen["cpu"] == "4"  # this request's CPU limit (run_timeout 3 s + 1)
        assert seen["stdin"] == "from stdin" and seen["argv"] == ["/workspace/main.js", "a", "b"]


def test_a_warm_node_keeps_the_request_limits(run, http):
    _wait_warm(http)
    hog = run(language="nodejs", memory_limit_MB=256,
              code="const a = []; for (;;) a.push(Buffer.alloc(1 << 20, 1));")
    assert hog["run_result"]["memory_limit_exceeded"] is True, hog
    _wait_warm(http)
    spin = run(language="nodejs", run_timeout=1, code="for (;;) {}")
    assert spin["run_result"]["status"] == "TimeLimitExceeded", spin
    _wait_warm(http)
    err = run(language="nodejs", code='throw new Error("boom")')
    assert err["status"] == "Failed" and err["run_result"]["return_code"] == 1
    assert "Error: boom" in err["run_result"]["stderr"] and "/workspace/main.js:1" in err["run_result"]["stderr"]
