"""Language registry: where the code goes, how it is compiled and run (all paths relative to the work dir)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field, replace
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

    def run_argv(self, args: Sequence[str]) -> list[str]:
        return [*self.run, *args] if self.accepts_args else list(self.run)


_GO_ENV = {"GOCACHE": "/tmp/.cache/go-build", "GOPATH": "/tmp/go", "GO111MODULE": "off", "CGO_ENABLED": "0",
           "GOFLAGS": "-buildvcs=false"}
_JAVA_OPTS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto")

ALL_LANGUAGES: tuple[LanguageSpec, ...] = (
    LanguageSpec("python", "main.py", ("python3", "main.py"), needs=("python3",), accepts_args=True),
    LanguageSpec("pytest", "test_main.py",
                 ("python3", "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_main.py"),
                 needs=("python3", "pytest"), accepts_args=True),
    LanguageSpec("bash", "main.sh", ("bash", "main.sh"), needs=("bash",), accepts_args=True),
    LanguageSpec("cpp", "main.cpp", ("./main",), ("g++", "-std=c++17", "main.cpp", "-o", "main", "-lpthread"),
                 needs=("g++",), accepts_args=True),
    LanguageSpec("c", "main.c", ("./main",), ("gcc", "-std=gnu17", "main.c", "-o", "main", "-lm"),
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
    LanguageSpec("rust", "main.rs", ("./main",), ("rustc", "--edition", "2021", "main.rs", "-o", "main"),
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


def available_languages(path: str) -> dict[str, LanguageSpec]:
    """Languages whose tools exist on `path` (the PATH user code sees), keyed by name and alias."""
    found: dict[str, LanguageSpec] = {}
    for spec in ALL_LANGUAGES:
        if spec.name == "typescript":
            spec = _with_node_types(spec)
        if all(shutil.which(tool, path=path) for tool in spec.needs):
            found[spec.name] = spec
            for alias in spec.aliases:
                found[alias] = spec
    return found
