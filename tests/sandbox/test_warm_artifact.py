"""The build-once shape the warm runtimes share (warm_artifact.py): servers sharing a directory build each file once,
the files are root's and read-only to sandboxes, a failed build leaves nothing half-written, a missing toolchain
turns the artifact off. Real files, locks and subprocesses in a temporary directory; no server."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path
from typing import Optional

from sandbox_server.jvm_cds import JavacArchive
from sandbox_server.pch import PchBuilder
from sandbox_server.ts_snapshot import TsSnapshot
from sandbox_server.warm_artifact import WarmArtifact, install, partial_path, run_niced


class Echo(WarmArtifact):
    """Each item is the output of `echo ITEM` (or of a command that fails, for items starting with "bad")."""

    def __init__(self, base: Path, items: tuple[str, ...]):
        super().__init__(base, "echo", items)
        self.made: list[str] = []
        self.warned: list[str] = []

    def _toolchain(self) -> Optional[str]:
        return "sh"

    def _warn(self, item: str, error: str) -> None:
        self.warned.append(item)

    async def _make(self, tool: str, item: str, tmp: Path) -> Optional[str]:
        self.made.append(item)
        target = self._target(item)
        partial = partial_path(target)
        rc, _, _ = await run_niced([tool, "-c", f'case {item} in bad*) exit 3;; esac; echo {item} > "$0"', str(partial)],
                                   cwd=str(tmp))
        if rc != 0:
            partial.unlink(missing_ok=True)
            return f"exited {rc}"
        install(partial, target)
        return None


async def test_two_builders_of_one_directory_build_each_file_once(tmp_path):
    first, second = Echo(tmp_path, ("a", "b")), Echo(tmp_path, ("a", "b"))
    await asyncio.gather(first.build(), second.build())
    assert sorted(first.made + second.made) == ["a", "b"]  # whoever held the lock first built both
    for artifact in (first, second):
        assert artifact.summary() == {"state": "ready", "error": None, "seconds": artifact.summary()["seconds"]}
        assert artifact.built == ["a", "b"] and artifact.ready
    assert (first.root / "a").read_text() == "a\n"
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [tmp_path, *tmp_path.rglob("*")]}
    assert modes == {tmp_path.name: 0o755, "echo": 0o755, ".lock": 0o600, "a": 0o644, "b": 0o644}


async def test_a_failed_item_is_recorded_and_leaves_no_partial_file(tmp_path):
    artifact = Echo(tmp_path, ("bad",))
    await artifact.build()
    assert artifact.summary()["state"] == "failed" and artifact.error == "exited 3"
    assert artifact.failed == {"bad": "exited 3"} and artifact.warned == ["bad"] and not artifact.ready
    assert sorted(p.name for p in artifact.root.iterdir()) == [".lock"]


async def test_each_warm_runtime_is_off_without_its_toolchain(tmp_path):
    pch = PchBuilder(tmp_path / "pch", "x", compiler="no-such-g++")
    ts = TsSnapshot(tmp_path / "ts", None, str(tmp_path))  # a PATH with no node on it
    javac = JavacArchive(tmp_path / "javac", "x", ["javac", "Main.java"], str(tmp_path))
    for artifact in (pch, ts, javac):
        await artifact.build()
    assert pch.summary() == {"state": "off", "built": [], "failed": {}, "seconds": None}
    assert ts.summary() == javac.summary() == {"state": "off", "error": None, "seconds": None}
    assert not (ts.ready or javac.ready)
