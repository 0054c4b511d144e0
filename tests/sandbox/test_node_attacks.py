"""The attack battery of test_security.py in JavaScript and TypeScript: their runs are forks of the node fork
server (node_zygote.py), which has to contain them exactly as a forked python run is contained."""

from __future__ import annotations

import json
import time
from urllib.parse import urlparse

import pytest

from .conftest import SECRET_ENV, SECRET_VALUE
from .test_node_fork_server import ZYGOTE, _wait_warm
from .test_security import clean_after  # noqa: F401  (fixture: nothing of the run survives it)

pytestmark = pytest.mark.usefixtures("fork_server_ready", "clean_after")

LANGUAGES = ["nodejs", "typescript"]


@pytest.fixture
def attack(run, http):
    """Run `code` as nodejs or typescript on a forked node (asserted), returning the answer."""
    def _attack(language: str, code: str, **payload) -> dict:
        _wait_warm(http)
        if language == "typescript":
            code = "// @ts-nocheck\ndeclare var require: any, process: any;\n" + code
        marker = "console.error('[' + require('fs').readFileSync('/proc/self/cmdline', 'utf8') + ']');\n"
        out = run(language=language, code=marker + code, compile_timeout=60, **payload)
        assert ZYGOTE in out["run_result"]["stderr"], out  # it ran in a fork of the node fork server
        return out
    return _attack


@pytest.mark.parametrize("language", LANGUAGES)
def test_child_process_fork_bomb_hits_pids_limit(attack, language):
    code = ("const cp = require('child_process'); let n = 0;\n"
            "try { for (;;) { cp.spawn('sleep', ['60'], {detached: true, stdio: 'ignore'}); n++; } }\n"
            "catch (e) { console.log('stopped after', n, e.code); }\n"
            "process.on('uncaughtException', (e) => { console.log('stopped after', n, e.code); process.exit(0); });\n")
    t0 = time.monotonic()
    out = attack(language, code, run_timeout=5)
    assert time.monotonic() - t0 < 20
    assert out["run_result"]["pids_limit_reached"] is True or "stopped after" in out["run_result"]["stdout"], out


@pytest.mark.parametrize("language", LANGUAGES)
def test_memory_hog(attack, language):
    out = attack(language, "const a = []; for (;;) a.push(Buffer.alloc(1 << 20, 1));", memory_limit_MB=256)
    assert out["run_result"]["memory_limit_exceeded"] is True, out
    assert out["status"] == "Failed"


@pytest.mark.parametrize("language", LANGUAGES)
def test_no_network_egress(attack, language, sandbox_url):
    port = urlparse(sandbox_url).port
    code = ("const net = require('net'), os = require('os');\n"
            "console.log(JSON.stringify(Object.keys(os.networkInterfaces())));\n"
            "let left = 2; const done = (what) => { console.log(what); if (--left === 0) process.exit(0); };\n"
            "for (const [host, port] of [['192.0.2.1', 80], ['127.0.0.1', %d]]) {\n"
            "  const s = net.connect({host, port, timeout: 3000});\n"
            "  s.on('connect', () => done('connected ' + host)); s.on('error', (e) => done('blocked ' + e.code));\n"
            "  s.on('timeout', () => done('blocked timeout')); }\n") % port
    out = attack(language, code, run_timeout=10)
    lines = out["run_result"]["stdout"].splitlines()
    assert lines[0] == '["lo"]', out
    assert all(line.startswith("blocked") for line in lines[1:]) and len(lines) == 3, out


@pytest.mark.parametrize("language", LANGUAGES)
def test_host_files_and_server_secrets_invisible(attack, language, tmp_path):
    import sandbox_server
    secret = tmp_path / "host-secret.txt"
    secret.write_text("top secret")
    paths = [sandbox_server.__file__, str(secret), "/root", "/home", "/work", "/etc/shadow",
             "/proc/1/root/etc/shadow", "/sys/fs/cgroup"]
    code = ("const fs = require('fs'); const res = {};\n"
            f"for (const p of {json.dumps(paths)}) {{\n"
            "  try { res[p] = fs.statSync(p).isDirectory() ? fs.readdirSync(p) : fs.readFileSync(p, 'utf8').slice(0, 20); }\n"
            "  catch (e) { res[p] = 'denied ' + e.code; } }\n"
            "let found = [];\n"
            "for (const pid of fs.readdirSync('/proc').filter((p) => /^\\d+$/.test(p))) for (const f of ['environ', 'cmdline']) {\n"
            "  try { const d = fs.readFileSync('/proc/' + pid + '/' + f, 'latin1');\n"
            f"    if (d.includes({SECRET_VALUE!r}) || d.includes({SECRET_ENV!r})) found.push(pid + '/' + f); }} catch {{}} }}\n"
            f"console.log(JSON.stringify({{res, found, env: {SECRET_ENV!r} in process.env}}));\n")
    out = attack(language, code)
    seen = json.loads(out["run_result"]["stdout"])
    for p in paths:
        assert str(seen["res"][p]).startswith("denied"), (p, seen["res"][p])
    assert seen["found"] == [] and seen["env"] is False, seen


@pytest.mark.parametrize("language", LANGUAGES)
def test_runaway_output_is_capped_and_stopped(attack, language):
    out = attack(language, "const s = 'y\\n'.repeat(1 << 16); const w = () => process.stdout.write(s, w); w();", run_timeout=20)
    rr = out["run_result"]
    assert rr["output_truncated"] is True and len(rr["stdout"]) == 1 << 20 and rr["stdout"].startswith("y\ny\n"), rr
    assert rr["execution_time"] < 15 and out["status"] == "Failed"


@pytest.mark.parametrize("language", LANGUAGES)
def test_cpu_spin_is_stopped(attack, language):
    out = attack(language, "for (;;) {}", run_timeout=1)
    assert out["run_result"]["status"] == "TimeLimitExceeded", out


@pytest.mark.parametrize("language", LANGUAGES)
def test_no_privileges_and_cannot_write_system_dirs(attack, language):
    code = ("const fs = require('fs'); const st = fs.readFileSync('/proc/self/status', 'utf8');\n"
            "const f = (n) => st.split('\\n').find((l) => l.startsWith(n + ':')).split(/\\s+/)[1];\n"
            "const w = []; for (const d of ['/usr', '/etc', '/opt/sandbox-node', '/']) {\n"
            "  try { fs.writeFileSync(d + '/x', 'x'); w.push(d); } catch {} }\n"
            "console.log(JSON.stringify({cap: f('CapEff'), bnd: f('CapBnd'), nnp: f('NoNewPrivs'), uid: f('Uid'), w}));\n")
    seen = json.loads(attack(language, code)["run_result"]["stdout"])
    assert int(seen["cap"], 16) == 0 and int(seen["bnd"], 16) == 0 and seen["nnp"] == "1", seen
    assert seen["uid"] != "0" and seen["w"] == [], seen
