"""Where a run resumes: the checkpoint folders under `trainer.default_local_dir` and the pointer to the newest.

A run can be killed at any instant, saves included. So every file that says "this is done" is written atomically
(temp file, fsync, rename), `trainer_state.json` is written last in a checkpoint (its presence marks the folder
complete), and a missing, empty or dangling pointer falls back to the newest complete folder.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

LATEST_FILE = "latest_checkpointed_iteration.txt"
STATE_FILE = "trainer_state.json"
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
