"""YAML + dotted command-line overrides -> validated `AgentGymConfig`.

Keys are checked against the typed schema before validation so an unknown key is reported by its full dotted
path together with the closest valid key (verl users often carry keys over from other versions).
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import BaseModel, ValidationError

from agentgym.config.inert import warn_inert_keys
from agentgym.config.schema import AgentGymConfig
from agentgym.errors import ConfigError


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic section type behind a field annotation (unwrapping `X | None`), or None for a leaf."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None


def _is_free_dict(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is dict:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_is_free_dict(a) for a in typing.get_args(annotation))
    return False


def all_keys(model: type[BaseModel] = AgentGymConfig, prefix: str = "") -> list[str]:
    """Every dotted key the schema accepts (sections and leaves)."""
    keys: list[str] = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        keys.append(dotted)
        sub = _model_of(field.annotation)
        if sub is not None:
            keys.extend(all_keys(sub, dotted + "."))
    return keys


def _unknown_key(dotted: str, source: str | None) -> ConfigError:
    candidates = all_keys()
    close = difflib.get_close_matches(dotted, candidates, n=1, cutoff=0.5)
    if not close:
        leaf = dotted.rsplit(".", 1)[-1]
        same_leaf = [k for k in candidates if k.rsplit(".", 1)[-1] == leaf]
        close = same_leaf[:1]
    fix = f"did you mean '{close[0]}'?" if close else "see agentgym/config/schema.py for the valid keys."
    return ConfigError(f"unknown config key '{dotted}'.", file=source, entry=dotted, fix=fix)


def _resolve(dotted: str, source: str | None) -> tuple[list[str], bool]:
    """Check `dotted` against the schema; returns its parts and whether it lies inside a free-form dict."""
    parts = dotted.split(".")
    model: type[BaseModel] | None = AgentGymConfig
    for i, part in enumerate(parts):
        if model is None:
            raise _unknown_key(dotted, source)
        field = model.model_fields.get(part)
        if field is None:
            raise _unknown_key(dotted, source)
        if _is_free_dict(field.annotation) and _model_of(field.annotation) is None:
            return parts, True
        model = _model_of(field.annotation)
    return parts, False


def check_keys(data: dict[str, Any], source: str | None = None, prefix: str = "") -> None:
    """Raise ConfigError for the first key in a nested dict that the schema does not know."""
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        _, free = _resolve(dotted, source)
        if isinstance(value, dict) and not free:
            check_keys(value, source, dotted + ".")


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b.c=value` (hydra's `+a.b=value` and `++a.b=value` accepted) with YAML-typed values."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' has no '='.", fix="write overrides as key=value, e.g. data.train_batch_size=8")
    key, raw = text.split("=", 1)
    key = key.lstrip("+").strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key.")
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': value is not valid YAML ({exc}).") from exc
    return key, value


def apply_override(data: dict[str, Any], key: str, value: Any) -> None:
    parts, _ = _resolve(key, "command line")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _override_for(dotted: str, message: str, overrides: dict[str, str]) -> str | None:
    """The command-line override a validation error is about: same key, a key above or below it, or (for
    whole-config checks, which have no key) one named in the message."""
    for key, text in overrides.items():
        if dotted and (dotted == key or dotted.startswith(key + ".") or key.startswith(dotted + ".")):
            return text
        if not dotted and key in message:
            return text
    return None


def build_config(data: dict[str, Any], source: str | None = None,
                 overrides: dict[str, str] | None = None) -> AgentGymConfig:
    """Validate; each problem is blamed on its source: the command-line override that set the key
    (`overrides` maps dotted keys to the `key=value` text given), else the YAML file."""
    check_keys(data, source)
    try:
        config = AgentGymConfig.model_validate(data)
    except ValidationError as exc:
        problems, from_file = [], False
        for err in exc.errors():
            dotted = ".".join(str(p) for p in err["loc"])
            message = err["msg"].removeprefix("Value error, ")
            override = _override_for(dotted, message, overrides or {})
            where = f" (from the command-line override `{override}`)" if override else ""
            from_file = from_file or override is None or not dotted  # whole-config checks involve the file too
            problems.append(f"{dotted or '<root>'}: {message}{where}")
        raise ConfigError(f"invalid config: {'; '.join(problems)}.", file=source if from_file else None) from exc
    warn_inert_keys(config)
    return config


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> AgentGymConfig:
    """Read a run config: YAML file (optional; defaults otherwise) then dotted overrides, validated."""
    data: dict[str, Any] = {}
    source = None
    if path is not None:
        source = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist.", fix="pass an existing YAML path") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"not valid YAML: {exc}", file=source) from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError("top level must be a mapping of sections.", file=source)
        check_keys(loaded, source)
        data = loaded
    given: dict[str, str] = {}
    for text in overrides:
        key, value = parse_override(text)
        apply_override(data, key, value)
        given[key] = text
    return build_config(data, source, given)


def dump_config(config: AgentGymConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
