"""The fork server's source, shipped as the module file zygote_main.py (package data of sandbox_server).

It is read as text and sent to `python3 -` in the template sandbox (see fork_server.py) instead of being run by
path: the template sees only /usr and its own work dir, not the server's install location, and a run's
/proc/1/cmdline stays `python3 - N`. Its process tree and protocol are described in zygote_main.py.
"""

from __future__ import annotations

import functools
from importlib import resources

_ZYGOTE_FILE = "zygote_main.py"


@functools.lru_cache(maxsize=1)
def zygote_source() -> str:
    """The text of zygote_main.py, read once from the installed package (a wheel ships it as package data)."""
    path = resources.files(__package__).joinpath(_ZYGOTE_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"{_ZYGOTE_FILE} is missing from the installed sandbox_server package "
                                f"({path}); reinstall it (pyproject's package-data must list it)")
    return path.read_text(encoding="utf-8")
