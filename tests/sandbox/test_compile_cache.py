"""The compile cache and the precompiled headers against hostile runs: a cache hit gives a run only what it would
have compiled itself, never another run's files; runs cannot see or change the cache or the headers."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

pytestmark = pytest.mark.usefixtures("fork_server_ready")


def _cpp(tag: str, body: str) -> str:
    """A C++ program unique to this test run (so that no earlier run of the suite left it in the cache)."""
    return f"// {tag} {uuid.uuid4().hex}\n#include <bits/stdc++.h>\nint main() {{\n{body}\n}}\n"


def test_a_hit_is_flagged_and_answers_like_the_compile(run):
    code = _cpp("hit", 'std::string s; std::cin >> s; std::cout << "got " << s << std::endl; return 0;')
    first = run(language="cpp", code=code, stdin="one")
    second = run(language="cpp", code=code, stdin="two")
    assert first["status"] == second["status"] == "Success", (first, second)
    assert first["compile_result"]["cached"] is False and second["compile_result"]["cached"] is True
    assert second["compile_result"]["return_code"] == 0 and second["compile_result"]["execution_time"] == 0
    assert first["run_result"]["stdout"] == "got one\n" and second["run_result"]["stdout"] == "got two\n"


def test_compile_errors_are_cached_with_the_same_diagnostics(run):
    code = _cpp("error", "return undeclared_name;")
    first = run(language="cpp", code=code)
    second = run(language="cpp", code=code)
    assert first["status"] == second["status"] == "Failed"
    assert first["compile_result"]["return_code"] == second["compile_result"]["return_code"] != 0
    assert "undeclared_name" in first["compile_result"]["stderr"]
    assert second["compile_result"]["stderr"] == first["compile_result"]["stderr"]
    assert second["compile_result"]["cached"] is True and second["run_result"] is None


# Run A replaces its own binary and plants files; run B, the same program from the cache, must get the binary as
# compiled and a work dir with nothing of A's.
SELF_REWRITE = r'''
std::ifstream probe("/workspace/planted");
if (probe.good()) { std::cout << "saw A's file" << std::endl; return 3; }
for (const char* d : {"/workspace", "/tmp", "/dev/shm"}) {
    std::ofstream(std::string(d) + "/planted") << "secret of run A";
}
std::remove("/workspace/main");
std::ofstream evil("/workspace/main");
evil << "#!/bin/sh\necho pwned\n";
evil.close();
chmod("/workspace/main", 0755);
std::cout << "original" << std::endl;
return 0;
'''


def test_a_program_that_rewrites_its_binary_does_not_change_the_cache(run):
    code = _cpp("rewrite", SELF_REWRITE).replace("#include <bits/stdc++.h>", "#include <bits/stdc++.h>\n#include <sys/stat.h>")
    a = run(language="cpp", code=code, fetch_files=["main"])
    assert a["run_result"]["stdout"] == "original\n", a
    assert a["files"]["main"]  # A really did replace it (the shell script came back)
    for _ in range(2):
        b = run(language="cpp", code=code)
        assert b["compile_result"]["cached"] is True
        assert b["run_result"]["stdout"] == "original\n", b  # not "pwned", not "saw A's file"


LIST_WORKSPACE = r'''
for (const auto& e : std::filesystem::recursive_directory_iterator("/workspace")) std::cout << e.path().string() << "\n";
for (const auto& e : std::filesystem::directory_iterator("/tmp")) std::cout << e.path().string() << "\n";
'''


def test_a_hit_sees_only_its_own_inputs(run):
    code = _cpp("list", LIST_WORKSPACE)
    files = {"data/in.txt": "aGVsbG8="}
    first = run(language="cpp", code=code, files=files)
    second = run(language="cpp", code=code, files=files)
    assert second["compile_result"]["cached"] is True
    expected = "/workspace/data\n/workspace/data/in.txt\n/workspace/main\n/workspace/main.cpp\n"
    assert sorted(first["run_result"]["stdout"].splitlines()) == sorted(expected.splitlines())
    assert sorted(second["run_result"]["stdout"].splitlines()) == sorted(expected.splitlines())


def test_different_flags_languages_or_files_never_share_an_entry(run):
    c_source = f'/* {uuid.uuid4().hex} */\n#include <stdio.h>\nint main(void) {{ puts("hi"); return 0; }}\n'
    as_c = run(language="c", code=c_source)
    as_cpp = run(language="cpp", code=c_source)
    assert as_c["compile_result"]["cached"] is False and as_cpp["compile_result"]["cached"] is False
    other_files = run(language="c", code=c_source, files={"extra.h": "LyogKi8="})
    assert other_files["compile_result"]["cached"] is False
    again = run(language="c", code=c_source, files={"extra.h": "LyogKi8="})
    assert again["compile_result"]["cached"] is True


# The cache and the headers, from inside: the cache is nowhere in the sandbox's view; the headers are read-only.
HUNT = r'''
import json, os
found, written = [], []
for top in ("/", ):
    for root, dirs, files in os.walk(top):
        if root.startswith(("/proc", "/sys", "/usr")):
            dirs[:] = []
            continue
        found += [os.path.join(root, f) for f in files if f.endswith(".entry") or "compile-cache" in root]
for target in ("/opt/sandbox-pch/bits/stdc++.h.gch", "/opt/sandbox-pch/evil.gch", "/opt/sandbox-pch/iostream.gch"):
    try:
        with open(target, "ab") as f:
            f.write(b"poison")
        written.append(target)
    except OSError:
        pass
try:
    os.rename("/opt/sandbox-pch/iostream.gch", "/opt/sandbox-pch/x")
    written.append("rename")
except OSError:
    pass
mounts = open("/proc/self/mountinfo").read()
print(json.dumps({"found": found, "written": written, "cache_mounted": "compile-cache" in mounts,
                  "pch": sorted(os.listdir("/opt/sandbox-pch"))}))
'''


@pytest.mark.parametrize("memory_mb", [-1, 32])  # forked and cold sandboxes
def test_runs_cannot_see_the_cache_or_change_the_headers(run, memory_mb):
    run(language="cpp", code=_cpp("seed", "return 0;"))  # at least one entry exists
    out = run(code=HUNT, memory_limit_MB=memory_mb)
    assert out["status"] == "Success", out
    seen = json.loads(out["run_result"]["stdout"])
    assert seen["found"] == [] and not seen["cache_mounted"]
    assert seen["written"] == []
    assert "iostream.gch" in seen["pch"] or seen["pch"] == []  # still building right after start is allowed


PCH_PROBE = r'''
printf '#include <bits/stdc++.h>\nint main(){}\n' > a.cpp
g++ -std=c++17 -pipe -I /opt/sandbox-pch -H a.cpp -o a 2>&1 | head -1
'''


def test_the_precompiled_header_is_used_by_the_cpp_command(run, http):
    import time
    deadline = time.monotonic() + 120
    while http.get("/v1/stats").json()["precompiled_headers"]["state"] != "ready" and time.monotonic() < deadline:
        time.sleep(0.5)
    out = run(language="bash", code=PCH_PROBE)
    assert out["run_result"]["stdout"] == "! /opt/sandbox-pch/bits/stdc++.h.gch\n", out  # "!": the PCH was used
    # A define the header reads makes GCC parse it instead: the program still compiles, exactly as without PCH.
    debug = run(language="cpp", code="#define _GLIBCXX_DEBUG\n" + _cpp("debug", "std::vector<int> v(2); std::cout << v.size();"))
    assert debug["status"] == "Success" and debug["run_result"]["stdout"] == "2", debug


TSC_REFERENCE = r'''
printf 'const n: number = "not a number";\nconsole.log(n);\n' > main.ts
tsc --target es2020 --module commonjs --skipLibCheck --outDir . --typeRoots "$1" --types node main.ts
echo "rc=$?"
cat main.js
'''


def test_the_typescript_snapshot_answers_like_tsc(run, http):
    import time
    deadline = time.monotonic() + 180
    while http.get("/v1/stats").json()["typescript_snapshot"]["state"] in ("pending", "building"):
        assert time.monotonic() < deadline, "the typescript snapshot was not built in time"
        time.sleep(0.5)
    assert http.get("/v1/stats").json()["typescript_snapshot"]["state"] == "ready"
    from sandbox_server.languages import available_languages
    argv = list(available_languages("/usr/local/bin:/usr/bin:/bin")["typescript"].compile or ())
    reference = run(language="bash", code=TSC_REFERENCE, args=[argv[argv.index("--typeRoots") + 1]])
    tsc_out, _, tsc_js = reference["run_result"]["stdout"].partition("rc=")
    ours = run(language="typescript", code='const n: number = "not a number";\nconsole.log(n);\n')
    assert ours["compile_result"]["stdout"] == tsc_out, (ours, reference)
    assert tsc_js.startswith(f"{ours['compile_result']['return_code']}\n")  # tsc's exit code (2: emitted anyway)
    good = run(language="typescript", code=f"// {uuid.uuid4().hex}\nconst w: string = 'ok';\nconsole.log(w);\n")
    assert good["status"] == "Success" and good["run_result"]["stdout"] == "ok\n", good


def test_the_cache_can_be_turned_off():
    import os
    import shutil
    from pathlib import Path

    import httpx

    from .conftest import start_server, stop_server

    work_root = Path("/dev/shm") / f"agentgym-sandbox-nocache-{os.getpid()}"
    server = start_server("--compile-cache-mb", "0", "--warm-pool-size", "0", "--work-root", str(work_root),
                          "--sandbox-uid", str(63000 + os.getpid() % 300))
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            code = _cpp("off", "return 0;")
            answers = [client.post("/run_code", json={"language": "cpp", "code": code}).json() for _ in range(2)]
            assert [a["compile_result"]["cached"] for a in answers] == [False, False], answers
            assert client.get("/v1/stats").json()["compile_cache"] is None
    finally:
        stop_server(server)
        shutil.rmtree(work_root, ignore_errors=True)


# Java, Go and Rust through the cache: run A (stdin "attack") replaces its compiled artifact with a script and
# plants a file; run B, the same program from the cache, must run the artifact as compiled in a work dir that holds
# only its own inputs and artifacts. Each program prints its work dir's listing.
SELF_REWRITE_BY_LANGUAGE = {
    "java": ("Main.class", """import java.nio.file.*;
public class Main {
    public static void main(String[] args) throws Exception {
        String mode = new String(System.in.readAllBytes()).trim();
        if (mode.equals("attack")) {
            Files.delete(Paths.get("Main.class"));
            Files.write(Paths.get("Main.class"), "pwned".getBytes());
            Files.write(Paths.get("planted"), "secret of run A".getBytes());
        }
        try (var s = Files.list(Paths.get("/workspace"))) {
            s.map(p -> p.getFileName().toString()).sorted().forEach(System.out::println);
        }
    }
}
"""),
    "go": ("main", """package main

import (
\t"fmt"
\t"io"
\t"os"
\t"sort"
)

func main() {
\tb, _ := io.ReadAll(os.Stdin)
\tif string(b) == "attack" {
\t\tos.Remove("main")
\t\tos.WriteFile("main", []byte("#!/bin/sh\\necho pwned\\n"), 0755)
\t\tos.WriteFile("planted", []byte("secret of run A"), 0644)
\t}
\tentries, _ := os.ReadDir("/workspace")
\tnames := []string{}
\tfor _, e := range entries {
\t\tnames = append(names, e.Name())
\t}
\tsort.Strings(names)
\tfor _, n := range names {
\t\tfmt.Println(n)
\t}
}
"""),
    "rust": ("main", """use std::io::Read;
fn main() {
    let mut mode = String::new();
    std::io::stdin().read_to_string(&mut mode).unwrap();
    if mode == "attack" {
        std::fs::remove_file("main").unwrap();
        std::fs::write("main", "#!/bin/sh\\necho pwned\\n").unwrap();
        std::fs::write("planted", "secret of run A").unwrap();
    }
    let mut names: Vec<String> = std::fs::read_dir("/workspace").unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    for n in names { println!("{}", n); }
}
"""),
}
SOURCES = {"java": "Main.java", "go": "main.go", "rust": "main.rs"}


@pytest.mark.parametrize("language", sorted(SELF_REWRITE_BY_LANGUAGE))
def test_a_compiled_program_that_rewrites_its_artifact_does_not_change_the_cache(run, language):
    artifact, code = SELF_REWRITE_BY_LANGUAGE[language]
    code = f"// {uuid.uuid4().hex}\n{code}"
    a = run(language=language, code=code, stdin="attack", fetch_files=[artifact])
    assert a["status"] == "Success", a
    assert "planted" in a["run_result"]["stdout"].split()
    assert base64.b64decode(a["files"][artifact]).startswith((b"pwned", b"#!/bin/sh"))  # A did replace it
    expected = sorted([SOURCES[language], artifact])
    for _ in range(2):
        b = run(language=language, code=code, stdin="check")
        assert b["compile_result"]["cached"] is True, b
        assert b["status"] == "Success", b
        assert b["run_result"]["stdout"].split() == expected, b  # no "planted", not "pwned"


# A run hunting the file system for another run's source (its unique marker) and for the cache's entries, while
# that other program sits compiled in the cache.
SOURCE_HUNT = r'''
import os, sys
marker, hits = sys.argv[1].encode(), []
for root, dirs, files in os.walk("/"):
    # the system's own files; /dev's devices and stdio links (but /dev/shm, where a run can write)
    if root.startswith(("/proc", "/sys", "/usr")) or (root.startswith("/dev") and not root.startswith("/dev/shm")):
        dirs[:] = []
        continue
    for name in files:
        path = os.path.join(root, name)
        try:
            with open(path, "rb") as f:
                if marker in f.read(1 << 22) or name.endswith(".entry"):
                    hits.append(path)
        except OSError:
            pass
print(hits)
'''


@pytest.mark.parametrize("language", sorted(SELF_REWRITE_BY_LANGUAGE))
def test_a_run_cannot_find_another_runs_cached_source_or_artifact(run, language):
    marker = f"MARKER{uuid.uuid4().hex}"
    _, code = SELF_REWRITE_BY_LANGUAGE[language]
    first = run(language=language, code=f"// {marker}\n{code}", stdin="check")
    assert first["status"] == "Success", first
    again = run(language=language, code=f"// {marker}\n{code}", stdin="check")
    assert again["compile_result"]["cached"] is True
    hunt = run(code=SOURCE_HUNT, args=[marker], run_timeout=30)
    assert hunt["status"] == "Success" and hunt["run_result"]["stdout"] == "[]\n", hunt


JAVAC_ARCHIVE_PROBE = r'''
printf 'public class Main { public static void main(String[] a) { System.out.println("hi"); } }\n' > Main.java
javac -J-XX:SharedArchiveFile=/opt/sandbox-jvm/javac.jsa -J-Xshare:on -J-Xlog:class+load=info \
    -J-XX:+UseSerialGC -J-XX:TieredStopAtLevel=1 -encoding UTF-8 Main.java | grep -c "shared objects file (top)"
echo "rc=${PIPESTATUS[0]}"
for f in /opt/sandbox-jvm/javac.jsa /opt/sandbox-jvm/evil.jsa; do echo poison >> "$f" 2>/dev/null && echo "wrote $f"; done
'''


def test_java_compiles_map_javacs_classes_from_the_archive_which_runs_cannot_change(run, http):
    import time
    deadline = time.monotonic() + 120
    while http.get("/v1/stats").json()["javac_archive"]["state"] in ("pending", "building"):
        assert time.monotonic() < deadline, "the javac archive was not built in time"
        time.sleep(0.5)
    assert http.get("/v1/stats").json()["javac_archive"]["state"] == "ready"
    out = run(language="bash", code=JAVAC_ARCHIVE_PROBE)
    count, rc, *rest = out["run_result"]["stdout"].split("\n")
    assert int(count) > 500 and rc == "rc=0", out  # hundreds of javac's classes came from the archive
    assert "wrote" not in out["run_result"]["stdout"], out
    java = run(language="java", code=f"// {uuid.uuid4().hex}\n" + SELF_REWRITE_BY_LANGUAGE["java"][1], stdin="x")
    assert java["status"] == "Success" and java["compile_result"]["stderr"] == "", java
