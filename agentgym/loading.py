"""Reading registry YAML files and importing the classes they name, with errors that point at the line to edit."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml

from agentgym.errors import ConfigError


def read_yaml_list(path: str | Path, key: str, example: str) -> list[Any]:
    """Return the list under `key` in a YAML file, or raise ConfigError saying what is wrong with the file."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("the file does not exist.", file=file, fix="check the path.") from None
    except OSError as exc:
        raise ConfigError(f"the file cannot be read ({exc.strerror}).", file=file) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and context_mark is not None:
            problem += f" ({context} at line {context_mark.line + 1}, column {context_mark.column + 1})"
        raise ConfigError(f"invalid YAML{where}: {problem}.", file=file, fix="correct the YAML syntax there.") from None
    data = _resolve_interpolations(data, file)
    if not isinstance(data, dict) or key not in data:
        raise ConfigError(
            f"the top level must be a mapping with a `{key}` list.", file=file, fix=f"write it as:\n{example}"
        )
    entries = data[key]
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ConfigError(
            f"`{key}` must be a list, got {type(entries).__name__}.", file=file, fix=f"write it as:\n{example}"
        )
    return entries


def _resolve_interpolations(data: Any, file: str) -> Any:
    """Resolve `${oc.env:VAR,default}` and the like with OmegaConf, as verl does when it loads these files."""
    if not isinstance(data, dict):
        return data
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(OmegaConf.create(data), resolve=True)
    except OmegaConfBaseException as exc:
        where = f" at `{exc.full_key}`" if getattr(exc, "full_key", None) else ""
        problem = str(exc).splitlines()[0]
        raise ConfigError(
            f"cannot resolve the value{where}: {problem}.",
            file=file,
            fix="set the environment variable it reads, give the interpolation a default "
            "(`${oc.env:NAME,default}`), or write the value itself.",
        ) from None


def import_class(class_path: str, base: type, *, aliases: dict[str, str], file: str, entry: str) -> type:
    """Import `package.module.ClassName`, resolving known aliases, and check it subclasses `base`."""
    resolved = aliases.get(class_path, class_path)
    module_name, _, class_name = resolved.rpartition(".")
    if not module_name:
        raise ConfigError(
            f"class_name `{class_path}` is not a full import path.",
            file=file,
            entry=entry,
            fix="write it as `package.module.ClassName`.",
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"cannot import module `{module_name}` for class_name `{class_path}`: {exc}.",
            file=file,
            entry=entry,
            fix="check the spelling, and that the package is installed and on PYTHONPATH.",
        ) from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ConfigError(
            f"module `{module_name}` has no attribute `{class_name}`.",
            file=file,
            entry=entry,
            fix=f"check the class name; the module defines: {', '.join(_public_classes(module)) or 'no classes'}.",
        )
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(
            f"`{class_path}` is not a subclass of {base.__module__}.{base.__name__}.",
            file=file,
            entry=entry,
            fix=f"make the class inherit from {base.__module__}.{base.__name__}.",
        )
    return cls


def _public_classes(module: Any) -> list[str]:
    return sorted(name for name, value in vars(module).items() if isinstance(value, type) and not name.startswith("_"))
