"""Checkpoints: saving them, and where a run resumes: the checkpoint folders under `trainer.default_local_dir`
and the pointer to the newest.

A run can be killed at any instant, saves included. So every file that says "this is done" is written atomically
(temp file, fsync, rename), `trainer_state.json` is written last in a checkpoint (its presence marks the folder
complete), and a missing, empty or dangling pointer falls back to the newest complete folder.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agentgym.errors import ConfigError
from agentgym.utils.console import say

LATEST_FILE = "latest_checkpointed_iteration.txt"
STATE_FILE = "trainer_state.json"
RNG_FILE = "driver_rng.pt"
_PREFIX = "global_step_"


def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` so that a reader (or a resume after a kill) sees the old file or the new one,
    never a partial one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def checkpoint_dir(root: Path, step: int) -> Path:
    return Path(root) / f"{_PREFIX}{step}"


def is_complete(path: Path) -> bool:
    return (Path(path) / STATE_FILE).is_file()


def complete_steps(root: Path) -> list[int]:
    """Steps of the complete checkpoints under `root`, oldest first."""
    steps = []
    for path in Path(root).glob(f"{_PREFIX}*"):
        suffix = path.name[len(_PREFIX):]
        if suffix.isdigit() and is_complete(path):
            steps.append(int(suffix))
    return sorted(steps)


@dataclass(frozen=True)
class ResumePoint:
    path: Path
    step: int


def find_resume_point(root: Path) -> tuple[ResumePoint | None, str | None]:
    """The checkpoint `latest_checkpointed_iteration.txt` names if it is complete, else the newest complete one;
    with a note saying why, when the pointer could not be followed."""
    root = Path(root)
    latest = root / LATEST_FILE
    problem = None
    if latest.exists():
        text = latest.read_text().strip()
        if text.isdigit() and is_complete(checkpoint_dir(root, int(text))):
            return ResumePoint(checkpoint_dir(root, int(text)), int(text)), None
        problem = (f"{latest} is empty or unreadable" if not text.isdigit()
                   else f"{checkpoint_dir(root, int(text))} (named by {LATEST_FILE}) is not a complete checkpoint")
    steps = complete_steps(root)
    if not steps:
        return None, None if problem is None else f"{problem} and no complete checkpoint exists; starting from step 0"
    point = ResumePoint(checkpoint_dir(root, steps[-1]), steps[-1])
    return point, None if problem is None else f"{problem}; using the newest complete checkpoint instead"


class CheckpointManager:
    """Saves, finds, loads and prunes a run's checkpoints under `trainer.default_local_dir`.

    The trainer hands it what a checkpoint holds besides the workers' model and optimizer state: the global step,
    the prompt iterator's position and the KL coefficient (`state`), and it restores the driver's random generators.
    """

    def __init__(self, config: Any, workers: Callable[[], Any], role_groups: Callable[[], Sequence[Any]] = tuple):
        """`workers`: the actor's group; `role_groups`: the groups of a critic or reference on a pool of its own,
        which save and load their models into the same folder. Both are started lazily: looked up at each call."""
        self.config = config
        self._workers = workers
        self._role_groups = role_groups
        self.resumed_from: Path | None = None
        # Resolved once, here in the driver: workers on other nodes (other working directories) get absolute paths.
        self._root = Path(config.checkpoint_dir).expanduser().resolve()

    @property
    def root(self) -> Path:
        return self._root

    async def _call_all(self, method: str, **kwargs: Any) -> list[Any]:
        """`method` on every rank of every trainer group (each its own collective), the answers in one list."""
        groups = [self._workers(), *self._role_groups()]
        answers = await asyncio.gather(*(group.call(method, **kwargs) for group in groups))
        return [answer for group in answers for answer in group]

    async def probe(self) -> None:
        """Check that every rank sees the checkpoint directory as the driver does: the driver writes a file there,
        each rank reads it back and writes its own, the driver reads those. A rank on another node without this
        storage mounted at this path fails here, at the start, not at the first save."""
        import socket
        import uuid

        self.root.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        probe = self.root / f".agentgym-probe-{token}"
        probe.write_text(token)
        try:
            answers = await self._call_all("probe_shared_dir", directory=str(self.root), token=token)
            problems = []
            for answer in answers:
                written = self.root / f".agentgym-probe-{token}-rank{answer['rank']}"
                if answer["error"] is None and not (written.is_file() and written.read_text() == token):
                    answer["error"] = f"wrote {written} but the driver on {socket.gethostname()} does not see it"
                if answer["error"] is not None:
                    problems.append(f"rank {answer['rank']} on {answer['host']}: {answer['error']}")
        finally:
            for leftover in self.root.glob(f".agentgym-probe-{token}*"):
                leftover.unlink(missing_ok=True)
        if problems:
            raise ConfigError(
                f"the checkpoint directory {self.root} is not shared by every rank: " + "; ".join(problems) + ".",
                entry="trainer.default_local_dir",
                fix="put it on storage every node mounts at the same path (NFS, Lustre, a cloud file system), "
                    "or run on one node")

    async def save(self, step: int, state: dict[str, Any]) -> Path:
        path = checkpoint_dir(self.root, step)
        path.mkdir(parents=True, exist_ok=True)
        (path / STATE_FILE).unlink(missing_ok=True)  # re-saving a step: incomplete until its state is written again
        contents = self.config.actor_rollout_ref.actor.checkpoint.save_contents
        await self._call_all("save_checkpoint", directory=str(path), with_optimizer="optimizer" in contents)
        if "hf_model" in contents:
            from agentgym.trainer.hf_export import HF_DIR, export_hf_model

            # Gathered from every rank (a collective), in bf16: what a server loads.
            weights = (await self._workers().call("actor_state_dict", dtype="bfloat16"))[0]
            export_hf_model(self.config.actor_rollout_ref.model.path, weights, path / HF_DIR)
        torch.save({"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
                   path / RNG_FILE)
        # Written last and atomically: its presence is what makes the folder a complete checkpoint.
        atomic_write_text(path / STATE_FILE, json.dumps({"global_step": step, **state}))
        atomic_write_text(self.root / LATEST_FILE, str(step))
        self.prune()
        return path

    def prune(self) -> None:
        keep = self.config.trainer.max_actor_ckpt_to_keep
        if not keep or keep <= 0:
            return
        steps = sorted(int(p.name.rsplit("_", 1)[1]) for p in self.root.glob(f"{_PREFIX}*")
                       if p.name.rsplit("_", 1)[1].isdigit())
        for old in steps[:-keep]:
            shutil.rmtree(checkpoint_dir(self.root, old), ignore_errors=True)

    def resume_path(self) -> Path | None:
        """The checkpoint `trainer.resume_mode` points at, or None to start fresh."""
        t = self.config.trainer
        if t.resume_mode == "disable":
            return None
        if t.resume_mode == "resume_path":
            if not t.resume_from_path:
                raise ConfigError("resume_mode=resume_path needs a path.", entry="trainer.resume_from_path",
                                  fix="set trainer.resume_from_path to a global_step_N folder")
            return Path(t.resume_from_path).expanduser().resolve()
        point, note = find_resume_point(self.root)
        if note:
            say(f"warning: {note}")
        return None if point is None else point.path

    async def load(self, path: str | Path | None = None) -> dict[str, Any] | None:
        """Load the workers' state and the driver's generators from `path` (default: `resume_path()`); return the
        saved trainer state, or None when there is nothing to resume."""
        path = Path(path) if path is not None else self.resume_path()
        if path is None:
            return None
        if not is_complete(path):
            raise ConfigError(f"{path} is not a complete checkpoint (no {STATE_FILE}).",
                              fix="point trainer.resume_from_path at a global_step_N folder, or resume_mode=disable")
        with_optim = "optimizer" in self.config.actor_rollout_ref.actor.checkpoint.load_contents
        await self._call_all("load_checkpoint", directory=str(path), with_optimizer=with_optim)
        state = json.loads((path / STATE_FILE).read_text())
        rng = torch.load(path / RNG_FILE, weights_only=False)
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        self.resumed_from = path
        return state
