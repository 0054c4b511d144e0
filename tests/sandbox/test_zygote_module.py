"""The fork server's source is a real module: importable without side effects, shipped as package data."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from sandbox_server.zygote import zygote_source

ROOT = Path(__file__).resolve().parents[2]


def test_source_is_the_module_file_and_compiles():
    text = zygote_source()
    assert text == (ROOT / "sandbox_server" / "zygote_main.py").read_text()
    compile(text, "zygote_main.py", "exec")


def test_importing_it_starts_nothing():
    # Run by the template as `python3 - FD`; imported, it must only define functions (no fd closing, no serving).
    out = subprocess.run([sys.executable, "-c", "import sandbox_server.zygote_main as z; print(z.serve_forever.__name__)"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "serve_forever\n"


def test_wheel_ships_it():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "zygote_main.py" in data["sandbox_server"]
