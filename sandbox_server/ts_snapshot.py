"""A node start-up snapshot of the TypeScript compiler (ts_snapshot.js), so a typescript compile step costs about
what `node` costs plus checking the program, not loading typescript.js and parsing @types/node each time.

Built once per image (or host) in the background, like the precompiled headers (pch.py): under
`runtime_cache_root` (default /var/cache/agentgym-sandbox/runtime), one subdirectory per identity of node,
typescript and the type definitions, bound read-only at /opt/sandbox-runtime into every sandbox. Until it
exists, or if it cannot be built, typescript compiles with `tsc` (same options, same output).

The same script is also the tsc fork server's warm module (`fork_server_script`, written next to the blob):
node_zygote.js loads it once, with the compiler warmed and JIT-compiled, and each compile is a fork of that node
(executor.py); the snapshot is then the path for runs that cannot fork (memory limits under node_zygote's minimum,
the fork server down).
"""

from __future__ import annotations

import logging
import os
import shutil
from importlib import resources
from pathlib import Path
from typing import Optional

from .compile_cache import toolchain_identity
from .warm_artifact import WarmArtifact, install, partial_path, run_niced, short_digest

logger = logging.getLogger("sandbox_server.ts_snapshot")

RUNTIME_MOUNT = "/opt/sandbox-runtime"
_BLOB = "tsc.blob"
_SCRIPT = "ts_snapshot.js"
_TS_LIBS = ("/usr/share/nodejs/typescript/lib/typescript.js", "/usr/lib/node_modules/typescript/lib/typescript.js",
            "/usr/local/lib/node_modules/typescript/lib/typescript.js")


def typescript_lib() -> Optional[str]:
    """The typescript.js that `tsc` on this host loads (Debian's first)."""
    return next((p for p in _TS_LIBS if os.path.isfile(p)), None)


class TsSnapshot(WarmArtifact):
    """The snapshot for one (node, typescript, type root) triple, and whether it is built yet."""

    def __init__(self, base: Path, type_root: Optional[str], path: str):
        ts_lib = typescript_lib()
        ident = ";".join([toolchain_identity(("node",), path), ts_lib or "-", type_root or "-",
                          str(_identity_of_tree(type_root)) if type_root else "-", _script_text()])
        super().__init__(base, short_digest(ident), (_BLOB,))
        self.ts_lib = ts_lib
        self.type_root = type_root
        self.path = path
        self._write_script()

    def compile_argv(self) -> tuple[str, ...]:
        # No checksum pass over the 65 MB blob at every start (~55 ms of ~310): it is root's, read-only, and was
        # renamed into place whole.
        return ("node", "--no-verify-snapshot-checksum", "--snapshot-blob", f"{RUNTIME_MOUNT}/{_BLOB}", "main.ts")

    @property
    def fork_server_script(self) -> str:
        """ts_snapshot.js as the sandbox sees it, for node_zygote.js's warm module argument."""
        return f"{RUNTIME_MOUNT}/{_SCRIPT}"

    def env(self) -> dict[str, str]:
        """What ts_snapshot.js reads at start: the typescript to load and the type definitions' root."""
        env = {"AGENTGYM_TS_LIB": self.ts_lib or ""}
        if self.type_root:
            env["AGENTGYM_TS_TYPE_ROOT"] = self.type_root
        return env

    def _write_script(self) -> None:
        """The script next to the blob (root's, read-only to sandboxes), renamed into place whole."""
        target = self.root / _SCRIPT
        text = _script_text()
        if target.is_file() and target.read_text(encoding="utf-8") == text:
            return
        partial = partial_path(target)
        partial.write_text(text, encoding="utf-8")
        install(partial, target)

    def _toolchain(self) -> Optional[str]:
        return shutil.which("node", path=self.path) if self.ts_lib is not None else None

    def _warn(self, item: str, error: str) -> None:
        logger.warning("typescript snapshot not built (tsc is used instead): %s", error)

    async def _make(self, tool: str, item: str, tmp: Path) -> Optional[str]:
        target = self._target(item)
        partial = partial_path(target)
        script = tmp / _SCRIPT
        script.write_text(_script_text())
        returncode, _, err = await run_niced([tool, "--snapshot-blob", str(partial), "--build-snapshot", str(script)],
                                             cwd=str(tmp), env={"PATH": self.path, "LANG": "C.UTF-8", **self.env()})
        if returncode != 0 or not partial.is_file():
            partial.unlink(missing_ok=True)
            return f"node --build-snapshot exited {returncode}: {err.decode(errors='replace')[-500:]}"
        install(partial, target)
        return None


def _script_text() -> str:
    return resources.files(__package__).joinpath(_SCRIPT).read_text(encoding="utf-8")


def _identity_of_tree(root: str) -> int:
    """A cheap change detector for the type definitions: the newest mtime below `root`'s node/ package."""
    newest = 0
    for parent, _, names in os.walk(os.path.join(root, "node")):
        for name in names:
            try:
                newest = max(newest, os.stat(os.path.join(parent, name)).st_mtime_ns)
            except OSError:
                pass
    return newest
