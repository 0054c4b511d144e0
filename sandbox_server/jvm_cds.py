"""A class-data-sharing (CDS) archive for javac, so a java compile step maps the compiler's classes instead of
loading, verifying and linking them at every start (JDK 17 on the 2-core machine: a hello world compiles with
~0.22 s of CPU instead of ~0.40 s).

A warm JVM shared between runs is not isolatable (one process would hold every run's classes, statics and
threads); an archive is: it is a read-only file of the JDK's own classes (jdk.compiler, java.base, ...) as
javac loads them, dumped once by the server on the host from a fixed program of its own (`-XX:ArchiveClassesAtExit`),
never from a request. It lives under `runtime_cache_root`, one directory per JDK identity and javac command line,
bound read-only at /opt/sandbox-jvm into every sandbox; the java language's compile command then adds
`-J-XX:SharedArchiveFile=...`. The JVM maps an archive only where it matches its own build, modules file and
flags; the build checks that with `-Xshare:on` (which fails instead of falling back) before renaming it into
place, so a compile never sees a CDS warning. The class files javac writes are the same either way. Until it is
built, or if it cannot be, java compiles without it.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Optional, Sequence

from .warm_artifact import WarmArtifact, install, partial_path, run_niced, short_digest

logger = logging.getLogger("sandbox_server.jvm_cds")

JVM_MOUNT = "/opt/sandbox-jvm"
_ARCHIVE = "javac.jsa"
# What javac loads for typical submissions: collections, streams, I/O, text, math, records of lambdas.
_WARM_PROGRAM = """import java.io.*;
import java.math.BigInteger;
import java.util.*;
import java.util.stream.*;

public class Main {
    record Pair(int a, String b) {}
    interface Op { long apply(long x); }
    public static void main(String[] args) throws IOException {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        List<Integer> xs = new ArrayList<>(List.of(3, 1, 2));
        Collections.sort(xs);
        Map<String, Integer> m = new HashMap<>();
        m.merge("k", 1, Integer::sum);
        Op twice = x -> 2 * x;
        String s = xs.stream().map(String::valueOf).collect(Collectors.joining(","));
        StringBuilder sb = new StringBuilder(s);
        System.out.printf("%s %d %s %s%n", sb, twice.apply(21), new BigInteger("12345").pow(3), new Pair(1, "x"));
        Scanner sc = new Scanner(in);
        int[] arr = new int[4];
        Arrays.fill(arr, 7);
        System.out.println(Arrays.stream(arr).sum() + " " + Math.max(1, 2) + " " + sc.hasNext());
    }
}
"""


class JavacArchive(WarmArtifact):
    """The archive for one (JDK, javac command line) pair, and whether it is built yet."""

    def __init__(self, base: Path, toolchain: str, compile_argv: Sequence[str], path: str):
        compile = tuple(compile_argv)
        super().__init__(base, f"javac-{short_digest(repr((toolchain, compile, _WARM_PROGRAM)))}", (_ARCHIVE,))
        self.compile = compile
        self.path = path

    def compile_argv(self) -> tuple[str, ...]:
        """The java compile command with the archive (JVM options reach javac's JVM as -J...)."""
        return (self.compile[0], f"-J-XX:SharedArchiveFile={JVM_MOUNT}/{_ARCHIVE}", *self.compile[1:])

    def _toolchain(self) -> Optional[str]:
        return shutil.which(self.compile[0], path=self.path)

    def _warn(self, item: str, error: str) -> None:
        logger.warning("the javac class-data archive was not built (java compiles without it): %s", error)

    async def _make(self, tool: str, item: str, tmp: Path) -> Optional[str]:
        target = self._target(item)
        partial = partial_path(target)
        (tmp / self.compile[-1]).write_text(_WARM_PROGRAM)
        dump = [tool, f"-J-XX:ArchiveClassesAtExit={partial}", *self.compile[1:]]
        check = [tool, f"-J-XX:SharedArchiveFile={partial}", "-J-Xshare:on", *self.compile[1:]]
        for argv, silent in ((dump, False), (check, True)):
            error = await _run(argv, str(tmp), self.path, silent)
            if error is not None:
                partial.unlink(missing_ok=True)
                return error
        install(partial, target)
        return None


async def _run(argv: Sequence[str], cwd: str, path: str, silent: bool) -> Optional[str]:
    """None when `argv` exits 0 (and, if `silent`, prints nothing: no CDS warning either); else what went wrong."""
    returncode, out, err = await run_niced(argv, cwd=cwd, env={"PATH": path, "LANG": "C.UTF-8", "HOME": cwd})
    if returncode != 0 or (silent and (out or err)):
        text = (out + err).decode(errors="replace")[-800:]
        return f"{' '.join(argv)} exited {returncode}: {text or '(no output)'}"
    return None
