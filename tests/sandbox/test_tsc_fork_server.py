"""The tsc fork server: typescript compiles are forks of one node that loaded and warmed the compiler
(executor._start_tsc_pool, ts_snapshot.js as node_zygote.js's warm module). A forked compile must answer as tsc
does, see nothing of any other compile or run, and be contained like every run."""

from __future__ import annotations

import concurrent.futures
import time
import uuid

import pytest

from sandbox_server.languages import available_languages

pytestmark = pytest.mark.usefixtures("fork_server_ready")

TSC_REFERENCE = r'''
cat > main.ts
tsc --target es2020 --module commonjs --skipLibCheck --outDir . --typeRoots "$1" --types node main.ts
echo "rc=$?"
cat main.js
'''


@pytest.fixture
def tsc_ready(http):
    deadline = time.monotonic() + 180
    while http.get("/v1/stats").json()["tsc_pool"] is None:
        assert time.monotonic() < deadline, "the tsc fork server did not start: see the server's log"
        time.sleep(0.5)


def _forked_compiles(http) -> int:
    return http.get("/v1/stats").json()["tsc_phases"].get("arm", {}).get("runs", 0)


def _type_root() -> str:
    argv = list(available_languages("/usr/local/bin:/usr/bin:/bin")["typescript"].compile or ())
    return argv[argv.index("--typeRoots") + 1]


@pytest.mark.parametrize("code", [
    'const n: number = "not a number";\nconsole.log(n);\n',
    'let x = ;\n',
    'import { readFileSync } from "fs";\nconst s: string = readFileSync(0, "utf8");\nconsole.log(s.length.foo);\n',
    'function f(a: number) { return a * 2; }\nconsole.log(f(21));\n',
])
def test_a_forked_compile_answers_like_tsc(run, http, tsc_ready, code):
    code = f"// {uuid.uuid4().hex}\n{code}"
    reference = run(language="bash", code=TSC_REFERENCE, args=[_type_root()], stdin=code)
    tsc_out, _, rest = reference["run_result"]["stdout"].partition("rc=")
    tsc_rc, _, tsc_js = rest.partition("\n")
    before = _forked_compiles(http)
    ours = run(language="typescript", code=code, fetch_files=["main.js"])
    assert _forked_compiles(http) == before + 1, "the compile did not run on the tsc fork server"
    assert ours["compile_result"]["stdout"] == tsc_out, (ours, reference)
    assert ours["compile_result"]["return_code"] == int(tsc_rc)
    if int(tsc_rc) == 0:
        assert ours["status"] == "Success" and ours["run_result"]["stdout"] == "42\n", ours
    else:
        assert ours["status"] == "Failed" and ours["run_result"] is None
        js = ours["files"].get("main.js")
        if tsc_js:  # tsc emits despite type errors (rc 2)
            import base64
            assert base64.b64decode(js).decode() == tsc_js


def test_a_forked_compile_fits_a_small_memory_limit(run, http, tsc_ready):
    # The compiler's heap is the zygote's: a fork writes little of its own, so 64 MB (where the snapshot and tsc,
    # which build that heap themselves, are killed) is enough.
    code = f"// {uuid.uuid4().hex}\n" + 'const n: number = "x";\nconsole.log(n);\n'
    before = _forked_compiles(http)
    small = run(language="typescript", code=code, memory_limit_MB=64)
    assert _forked_compiles(http) == before + 1
    assert small["compile_result"]["memory_limit_exceeded"] is False, small
    assert small["compile_result"]["return_code"] == 2
    assert "TS2322: Type 'string' is not assignable to type 'number'" in small["compile_result"]["stdout"], small


# A program that augments a global type compiles; the next compile, a fork of the same zygote, must not know the
# augmentation (the parsed default libraries are shared by every fork: a compile that changed them in the
# zygote would change what the next program type-checks against).
AUGMENT = 'declare global { interface String { secretOfA(): string } }\nexport {};\nconsole.log("a");\n'
USE = 'const s: string = "x".secretOfA();\nconsole.log(s);\n'


def test_a_compile_leaves_nothing_for_the_next(run, http, tsc_ready):
    tag = uuid.uuid4().hex
    a = run(language="typescript", code=f"// {tag}\n{AUGMENT}")
    assert a["status"] == "Success" and a["run_result"]["stdout"] == "a\n", a
    b = run(language="typescript", code=f"// {tag}\n{USE}")
    assert b["compile_result"]["return_code"] == 2, b
    assert "TS2339: Property 'secretOfA' does not exist on type '\"x\"'" in b["compile_result"]["stdout"], b


def test_concurrent_compiles_each_get_their_own_program(run, http, tsc_ready):
    tags = [uuid.uuid4().hex for _ in range(8)]

    def one(tag: str) -> dict:
        return run(language="typescript", code=f'const tag: string = "{tag}";\nconsole.log(tag);\n')

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, tags))
    assert [a["run_result"]["stdout"] for a in answers] == [f"{t}\n" for t in tags], answers


# Run A plants a source and a declaration with its secret in every writable place and stays alive; compile B,
# meanwhile, references those paths (tsc reads what `/// <reference path>` and imports name): it must find none.
PLANT = r'''
const fs = require("fs");
for (const d of ["/workspace", "/tmp", "/dev/shm"]) {
  fs.writeFileSync(d + "/secret.ts", "export const secret = 'SECRET_TAG';\n");
  fs.writeFileSync(d + "/secret.d.ts", "declare const SECRET_TAG_IN_TYPES: 'SECRET_TAG';\n");
}
console.log("planted");
setTimeout(() => {}, 4000);
'''
PROBE = '''/// <reference path="/tmp/secret.d.ts" />
/// <reference path="/dev/shm/secret.d.ts" />
import { secret } from "/workspace/secret";
const s: number = SECRET_TAG_IN_TYPES;
console.log(secret, s);
'''


def test_a_compile_cannot_read_another_runs_files(run, http, tsc_ready):
    tag = uuid.uuid4().hex
    plant = "// @ts-nocheck\ndeclare var require: any;\n" + PLANT.replace("SECRET_TAG", tag)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        planted = pool.submit(run, language="typescript", code=plant)
        time.sleep(1.5)  # A is running (its compile is ~0.1 s; it then sleeps 4 s)
        probe = run(language="typescript", code=PROBE)
        a = planted.result()
    assert a["run_result"]["stdout"] == "planted\n", a
    out = probe["compile_result"]["stdout"]
    assert probe["status"] == "Failed" and tag not in out, probe
    assert "File '/tmp/secret.d.ts' not found" in out and "File '/dev/shm/secret.d.ts' not found" in out, out
    assert "Cannot find module '/workspace/secret'" in out and "Cannot find name 'SECRET_TAG_IN_TYPES'" in out, out


def test_a_compile_that_exhausts_memory_is_stopped_alone(run, http, tsc_ready):
    # ~24 MB of statements: the syntax tree alone outgrows a 128 MB limit (the fork's own pages are charged to it).
    code = f"// {uuid.uuid4().hex}\nlet v = 0;\n" + "v += 1;\n" * 3_000_000
    before = _forked_compiles(http)
    out = run(language="typescript", code=code, memory_limit_MB=128)
    assert _forked_compiles(http) == before + 1
    assert out["compile_result"]["memory_limit_exceeded"] is True, {k: v for k, v in out.items() if k != "files"}
    assert out["status"] == "Failed" and out["run_result"] is None
    after = run(language="typescript", code=f'// {uuid.uuid4().hex}\nconsole.log("fine");\n')
    assert after["status"] == "Success" and after["run_result"]["stdout"] == "fine\n", after
