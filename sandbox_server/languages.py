"""Language registry: where the code goes, how it is compiled and run (all paths relative to the work dir)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence


def _php_tag(code: str) -> str:
    return code if "<?php" in code or "<?=" in code else "<?php\n" + code


@dataclass(frozen=True)
class LanguageSpec:
    name: str
    source: str
    run: tuple[str, ...]
    compile: Optional[tuple[str, ...]] = None
    needs: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    accepts_args: bool = False
    transform: Optional[Callable[[str], str]] = None
    aliases: tuple[str, ...] = ()
    # For languages whose run command names something in the code (Scala's main object): found in the code
    # and put where `run` says "{entry}"; None when the code has none (the request then fails to compile).
    entry: Optional[Callable[[str], Optional[str]]] = None

    def run_argv(self, args: Sequence[str], code: str = "") -> list[str]:
        run = list(self.run)
        if self.entry is not None:
            name = self.entry(code) or ""
            run = [part.replace("{entry}", name) for part in run]
        return [*run, *args] if self.accepts_args else run


def scala_main_object(code: str) -> Optional[str]:
    """The first `object Name` in the code, which Sandbox Fusion runs with `scala Name`."""
    match = re.search(r"\bobject\s+(\w+)", code)
    return match.group(1) if match else None


# C++: the standard and the read-only directory of precompiled headers (pch.py builds them with the same -std;
# GCC uses one only where it gives exactly what parsing the header would). -O0 (no -O flag) as Sandbox Fusion:
# the fastest to compile, and a program runs as fast as it does there, so time limits mean the same.
PCH_MOUNT = "/opt/sandbox-pch"
CPP_STD = ("-std=c++17",)
# gold links a small program in ~16 ms of CPU where the default bfd ld takes ~40 (a third of a PCH hello world's
# compile); the binary runs the same. Where binutils has no gold, the default linker.
_FAST_LD = ("-fuse-ld=gold",) if shutil.which("ld.gold") else ()

_GO_ENV = {"GOCACHE": "/tmp/.cache/go-build", "GOPATH": "/tmp/go", "GO111MODULE": "off", "CGO_ENABLED": "0",
           "GOFLAGS": "-buildvcs=false"}
_JAVA_OPTS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto")

ALL_LANGUAGES: tuple[LanguageSpec, ...] = (
    LanguageSpec("python", "main.py", ("python3", "main.py"), needs=("python3",), accepts_args=True),
    LanguageSpec("pytest", "test_main.py",
                 ("python3", "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_main.py"),
                 needs=("python3", "pytest"), accepts_args=True),
    LanguageSpec("bash", "main.sh", ("bash", "main.sh"), needs=("bash",), accepts_args=True),
    LanguageSpec("cpp", "main.cpp", ("./main",),
                 ("g++", *CPP_STD, "-pipe", *_FAST_LD, "-I", PCH_MOUNT, "main.cpp", "-o", "main", "-lpthread"),
                 needs=("g++",), accepts_args=True),
    LanguageSpec("c", "main.c", ("./main",), ("gcc", "-std=gnu17", "-pipe", *_FAST_LD, "main.c", "-o", "main", "-lm"),
                 needs=("gcc",), accepts_args=True),
    LanguageSpec("nodejs", "main.js", ("node", "main.js"), needs=("node",), accepts_args=True, aliases=("js",)),
    LanguageSpec("typescript", "main.ts", ("node", "main.js"),
                 ("tsc", "--target", "es2020", "--module", "commonjs", "--skipLibCheck", "--outDir", ".", "main.ts"),
                 needs=("tsc", "node"), accepts_args=True, aliases=("ts",)),
    LanguageSpec("go", "main.go", ("./main",), ("go", "build", "-o", "main", "main.go"), needs=("go",),
                 env=_GO_ENV, accepts_args=True),
    LanguageSpec("java", "Main.java", ("java", *_JAVA_OPTS, "-ea", "Main"),
                 ("javac", "-J-XX:+UseSerialGC", "-J-XX:TieredStopAtLevel=1", "-encoding", "UTF-8", "Main.java"),
                 needs=("java", "javac"), accepts_args=True),
    # strip=debuginfo drops the standard library's line tables: Debian's rustc 1.63 links an 11.6 MB hello world
    # otherwise (0.45 MB with it) and compiles 40 % faster; user code has no debuginfo either way (no -g), and
    # panic messages carry their location regardless.
    LanguageSpec("rust", "main.rs", ("./main",),
                 ("rustc", "--edition", "2021", "-C", "strip=debuginfo", "main.rs", "-o", "main"),
                 needs=("rustc",), accepts_args=True),
    LanguageSpec("ruby", "main.rb", ("ruby", "main.rb"), needs=("ruby",), accepts_args=True),
    LanguageSpec("perl", "main.pl", ("perl", "main.pl"), needs=("perl",), accepts_args=True),
    LanguageSpec("php", "main.php", ("php", "-f", "main.php"), needs=("php",), accepts_args=True,
                 transform=_php_tag),
    LanguageSpec("lua", "main.lua", ("lua", "main.lua"), needs=("lua",), accepts_args=True),
    LanguageSpec("R", "main.R", ("Rscript", "--vanilla", "main.R"), needs=("Rscript",), accepts_args=True),
    LanguageSpec("racket", "main.rkt", ("racket", "main.rkt"), needs=("racket",), accepts_args=True),
    # Sandbox Fusion's go_test: `go test` on the one test file (compile errors show in the run step, as there).
    LanguageSpec("go_test", "main_test.go", ("go", "test", "main_test.go"), needs=("go",), env=_GO_ENV),
    # C# through Debian's mono: mcs (C# 7.x; no top-level statements or implicit usings, see README) + mono.
    LanguageSpec("csharp", "main.cs", ("mono", "main.exe"), ("mcs", "-out:main.exe", "main.cs"),
                 needs=("mcs", "mono"), accepts_args=True, aliases=("cs",)),
    # Sandbox Fusion's D_ut: `dmd main.d -unittest` run; ldc's ldmd2 takes dmd's flags (unittests run, then main
    # only if there were none, as with dmd).
    LanguageSpec("D_ut", "main.d", ("./test",), ("ldmd2", "main.d", "-unittest", "-of=test"), needs=("ldmd2",)),
    # The script runs on a fresh database file in the work dir (`main.db`, or the one sent in `files`);
    # -bail stops at the first error, which then fails the run.
    LanguageSpec("sql", "main.sql", ("sqlite3", "-bail", "-batch", "main.db", ".read main.sql"),
                 needs=("sqlite3",), aliases=("sqlite",)),
    # Sandbox Fusion's scala: scalac, then `scala <first object>` (Debian's Scala 2.11 on the JDK).
    LanguageSpec("scala", "main.scala", ("scala", "{entry}"), ("scalac", "main.scala"),
                 needs=("scala", "scalac"), accepts_args=True, entry=scala_main_object),
    # Sandbox Fusion's verilog (VerilogEval's commands): the top module must be `tb`.
    LanguageSpec("verilog", "main.sv", ("vvp", "-n", "test.vvp"),
                 ("iverilog", "-Wall", "-Winfloop", "-Wno-timescale", "-g2012", "-s", "tb", "-o", "test.vvp",
                  "main.sv"), needs=("iverilog", "vvp")),
)


# Debian's nodejs ships @types/node under /usr/share/nodejs; `npm install -g @types/node` puts it elsewhere.
_NODE_TYPE_ROOTS = ("/usr/share/nodejs/@types", "/usr/lib/node_modules/@types", "/usr/local/lib/node_modules/@types")


def _with_node_types(spec: LanguageSpec) -> LanguageSpec:
    """Let TypeScript programs use Node's APIs (process, require) when their type definitions are installed."""
    for root in _NODE_TYPE_ROOTS:
        if os.path.isfile(os.path.join(root, "node", "index.d.ts")):
            assert spec.compile is not None
            return replace(spec, compile=(*spec.compile[:-1], "--typeRoots", root, "--types", "node",
                                          spec.compile[-1]))
    return spec


def _with_fast_rust_link(spec: LanguageSpec, path: str) -> LanguageSpec:
    """Link rust programs with gold (~25 ms less CPU per compile than bfd ld, as for C and C++) where this rustc
    does so silently: newer rustc versions warn that gold is deprecated, which would land in every compile's
    stderr. Probed once, by linking a hello world."""
    rustc = shutil.which("rustc", path=path)
    if not _FAST_LD or rustc is None:
        return spec
    assert spec.compile is not None
    flags = tuple(f"-Clink-arg={flag}" for flag in _FAST_LD)
    with tempfile.TemporaryDirectory(prefix="rust-link-probe-") as tmp:
        Path(tmp, "main.rs").write_text('fn main() { println!("hello"); }\n')
        try:
            probe = subprocess.run([rustc, *spec.compile[1:-3], *flags, *spec.compile[-3:]], cwd=tmp,
                                   capture_output=True, timeout=120, env={"PATH": path, "HOME": tmp})
        except (OSError, subprocess.TimeoutExpired):
            return spec
    if probe.returncode != 0 or probe.stdout or probe.stderr:
        return spec
    return replace(spec, compile=(*spec.compile[:-3], *flags, *spec.compile[-3:]))


def available_languages(path: str) -> dict[str, LanguageSpec]:
    """Languages whose tools exist on `path` (the PATH user code sees), keyed by name and alias."""
    found: dict[str, LanguageSpec] = {}
    for spec in ALL_LANGUAGES:
        if not all(shutil.which(tool, path=path) for tool in spec.needs):
            continue
        if spec.name == "typescript":
            spec = _with_node_types(spec)
        if spec.name == "rust":
            spec = _with_fast_rust_link(spec, path)
        found[spec.name] = spec
        for alias in spec.aliases:
            found[alias] = spec
    return found
