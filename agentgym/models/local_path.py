"""Checking a configured model path before anything loads it.

Given an empty or unknown path, `from_pretrained` treats it as a Hugging Face hub id and ends, on a machine without
a reachable hub, in a long traceback about connecting to the hub. agentgym downloads nothing, so the path must be a
local model directory (or a model already in the local Hugging Face cache).
"""

from __future__ import annotations

from pathlib import Path

from agentgym.errors import ConfigError

BUILD_ONE = ("python -c \"from agentgym.models import build_tiny_model; "
             "print(build_tiny_model('runs/models', size='small'))\"")


def _cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(repo_id, local_files_only=True)
    except Exception:
        return False
    return True


def check_model_path(path: str | None, *, entry: str = "actor_rollout_ref.model.path") -> None:
    """Raise ConfigError saying what to set unless `path` is a local model directory or a cached hub model."""
    local = ("a local Hugging Face model directory (config.json, weights, tokenizer), e.g. one built offline with "
             f"{BUILD_ONE}")
    if not path:
        raise ConfigError(f"no model given: `{entry}` is required.", entry=entry,
                          fix=f"set {entry}=DIR, {local}. Models are never downloaded: no model hub is reachable "
                              "from agentgym runs here.")
    directory = Path(path).expanduser()
    if directory.is_dir():
        if not (directory / "config.json").exists():
            raise ConfigError(f"{directory} has no config.json, so it is not a Hugging Face model directory.",
                              entry=entry, fix=f"point {entry} at {local}")
        return
    if directory.exists():
        raise ConfigError(f"{directory} is a file, not a model directory.", entry=entry, fix=f"point {entry} at {local}")
    if _cached(path):
        return
    raise ConfigError(
        f"`{path}` is neither a local directory nor a model in the local Hugging Face cache.", entry=entry,
        fix=f"set {entry} to {local}. Models are never downloaded: no model hub is reachable from agentgym runs "
            "here, so copy the model directory onto this machine first.")
