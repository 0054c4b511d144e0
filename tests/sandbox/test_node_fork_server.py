"""The node fork server (node_zygote.py): each nodejs run is a fresh fork of one started node, in that run's own
sandbox, unprivileged, under that request's limits; nothing of one run (globals, module cache, patched built-in
modules, files, processes, timers, Math.random's state) reaches the next."""

from __future__ import annotations

import json
import time

import httpx
import pytest

pytestmark = pytest.mark.usefixtures("fork_server_ready")

ZYGOTE = "/opt/sandbox-node/node_zygote.js"


def _wait_warm(http: httpx.Client) -> None:
    """Until a prepared run with a started node is ready (the pool refills in the background)."""
    deadline = time.monotonic() + 60
    while True:
        pool = http.get("/v1/stats").json()["node_pool"]  # None until it has started (build, self-test)
        if pool is not None and pool["ready"] > 0:
            return
        assert time.monotonic() < deadline, f"the node fork server has no run ready: {pool} (see the server's log)"
        time.sleep(0.05)


PLANT = r'''
const fs = require("fs"), cp = require("child_process");
for (const d of ["/tmp", "/workspace", "/dev/shm"]) fs.writeFileSync(d + "/leak", "left behind");
cp.spawn("sleep", ["300"], {detached: true, stdio: "ignore"}).unref();
globalThis.leaked = 1;
fs.leaked = 1;  // a built-in module's object, loaded in the zygote before the fork
Object.prototype.polluted = 1;
fs.writeFileSync("/tmp/mod.js", "module.exports = 1;"); require("/tmp/mod.js");
setInterval(() => console.log("timer of the planting run"), 1).unref();
setTimeout(() => {}, 50);
globalThis.randoms = [Math.random(), Math.random()];
console.log(JSON.stringify(globalThis.randoms));
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
  workspace: fs.readdirSync("/workspace"), leaked: typeof globalThis.leaked, fsLeaked: typeof fs.leaked,
  polluted: typeof ({}).polluted, cache: Object.keys(require.cache), pid: process.pid, ppid: process.ppid,
  randoms: [Math.random(), Math.random()],
  capEff: field("CapEff"), noNewPrivs: field("NoNewPrivs"), uid: field("Uid"), cpu: limits.split(/\s+/)[3],
  stdin: fs.readFileSync(0, "utf8"), argv: process.argv.slice(1),
}));
'''


def test_nothing_of_one_forked_node_run_reaches_the_next(run, http):
    drawn = []
    for _ in range(3):
        _wait_warm(http)
        planted = run(language="nodejs", code=PLANT)
        assert planted["status"] == "Success", planted
        drawn += json.loads(planted["run_result"]["stdout"].splitlines()[0])
        _wait_warm(http)
        out = run(language="nodejs", code=CHECK, stdin="from stdin", args=["a", "b"], run_timeout=3)
        assert out["status"] == "Success", out
        seen = json.loads(out["run_result"]["stdout"])
        assert ZYGOTE in seen["cmdline"], seen  # it ran in a fork of the node fork server
        assert ZYGOTE in seen["init"] and seen["pid"] == 2 and seen["ppid"] == 1  # child of its run's own init
        assert seen["pids"] == 2, seen  # that init and this node: nothing of the planting run
        assert seen["files"] == [] and seen["workspace"] == ["main.js"] and seen["leaked"] == "undefined"
        assert seen["fsLeaked"] == "undefined" and seen["polluted"] == "undefined"
        assert seen["cache"] == ["/workspace/main.js"], seen  # the require cache holds this program only
        assert "timer" not in out["run_result"]["stdout"]
        drawn += seen["randoms"]
        assert int(seen["capEff"], 16) == 0 and seen["noNewPrivs"] == "1"
        assert seen["uid"] != "0" and seen["cpu"] == "4"  # this request's CPU limit (run_timeout 3 s + 1)
        assert seen["stdin"] == "from stdin" and seen["argv"] == ["/workspace/main.js", "a", "b"]


    assert len(set(drawn)) == len(drawn), drawn  # Math.random is not the zygote's sequence replayed per fork


def test_a_forked_node_keeps_the_request_limits(run, http):
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


PROGRAMS = {
    # V8's garbage collector runs its jobs (a fork has no worker threads), then node's exit path
    "gc": ("const a = []; for (let i = 0; i < 1e6; i++) a.push({i}); console.log(a.length);", "1000000\n", 0),
    "exit code": ("process.exitCode = 3; console.log('x');", "x\n", 3),
    "process.exit": ("console.log('y'); process.exit(5); console.log('never');", "y\n", 5),
    "timers and async I/O": ("setTimeout(() => console.log('t'), 20);"
                             "require('fs').readFile('/workspace/main.js', (e, d) => console.log(!e));",
                             "true\nt\n", 0),
    "a child process": ("console.log(require('child_process').execSync('echo sub').toString().trim())", "sub\n", 0),
    "a worker thread": ("const {Worker} = require('worker_threads');"
                        "new Worker('require(\"worker_threads\").parentPort.postMessage(7)', {eval: true})"
                        ".on('message', (m) => console.log(m));", "7\n", 0),
    "stdin": ("console.log(require('fs').readFileSync(0, 'utf8').trim().toUpperCase())", "ABC\n", 0),
}


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_forked_node_runs_programs_as_node_does(run, http, name):
    code, stdout, rc = PROGRAMS[name]
    _wait_warm(http)
    out = run(language="nodejs", code=code, stdin="abc", run_timeout=10)
    assert out["run_result"]["return_code"] == rc, out
    assert out["run_result"]["stdout"] == stdout, out
