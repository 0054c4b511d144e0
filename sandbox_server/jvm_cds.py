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

import asyncio
import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

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


class JavacArchive:
    """The archive for one (JDK, javac command line) pair, and whether it is built yet."""

    def __init__(self, base: Path, toolchain: str, compile_argv: Sequence[str], path: str):
        self.compile = tuple(compile_argv)
        self.path = path
        digest = hashlib.sha256(repr((toolchain, self.compile, _WARM_PROGRAM)).encode()).hexdigest()[:16]
        self.root = base / f"javac-{digest}"
        self.root.mkdir(parents=True, exist_ok=True)
        for d in (base, self.root):  # bwrap, as the sandbox uid, must reach it to bind it
            os.chmod(d, 0o755)
        self.state = "pending"
        self.error: Optional[str] = None
        self.seconds: Optional[float] = None

    @property
    def ready(self) -> bool:
        return (self.root / _ARCHIVE).is_file()

    def compile_argv(self) -> tuple[str, ...]:
        """The java compile command with the archive (JVM options reach javac's JVM as -J...)."""
        return (self.compile[0], f"-J-XX:SharedArchiveFile={JVM_MOUNT}/{_ARCHIVE}", *self.compile[1:])

    def summary(self) -> dict:
        return {"state": self.state, "error": self.error,
                "seconds": None if self.seconds is None else round(self.seconds, 2)}

    async def build(self) -> None:
        if shutil.which(self.compile[0], path=self.path) is None:
            self.state = "off"
            return
        self.state = "building"
        t0 = time.monotonic()
        lock = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)  # another server may be building it
            if not self.ready:
                self.error = await self._build()
                if self.error is not None:
                    logger.warning("the javac class-data archive was not built (java compiles without it): %s",
                                   self.error)
        finally:
            os.close(lock)
        self.seconds = time.monotonic() - t0
        self.state = "ready" if self.ready else "failed"

    async def _build(self) -> Optional[str]:
        target = self.root / _ARCHIVE
        partial = target.with_name(f".{_ARCHIVE}.{os.getpid()}.tmp")
        javac = shutil.which(self.compile[0], path=self.path)
        assert javac is not None
        source = self.compile[-1]
        with tempfile.TemporaryDirectory(prefix="javac-cds-") as tmp:
            (Path(tmp) / source).write_text(_WARM_PROGRAM)
            dump = [javac, f"-J-XX:ArchiveClassesAtExit={partial}", *self.compile[1:]]
            check = [javac, f"-J-XX:SharedArchiveFile={partial}", "-J-Xshare:on", *self.compile[1:]]
            for argv, silent in ((dump, False), (check, True)):
                error = await _run(argv, tmp, self.path, silent)
                if error is not None:
                    partial.unlink(missing_ok=True)
                    return error
        os.chmod(partial, 0o644)
        os.replace(partial, target)  # atomic: a compile sees the whole archive or none
        return None


async def _run(argv: Sequence[str], cwd: str, path: str, silent: bool) -> Optional[str]:
    """None when `argv` exits 0 (and, if `silent`, prints nothing: no CDS warning either); else what went wrong."""
    nice = shutil.which("nice")
    proc = await asyncio.create_subprocess_exec(*([nice, "-n", "10"] if nice else []), *argv, cwd=cwd,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                env={"PATH": path, "LANG": "C.UTF-8", "HOME": cwd})
    out, err = await proc.communicate()
    if proc.returncode != 0 or (silent and (out or err)):
        text = (out + err).decode(errors="replace")[-800:]
        return f"{' '.join(argv)} exited {proc.returncode}: {text or '(no output)'}"
    return None
