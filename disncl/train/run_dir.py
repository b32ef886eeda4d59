"""A run directory: its files, the epoch log, and the clean-up a resume needs after a kill."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from disncl.io import atomic_write_text


class RunDir:
    """The files of one run directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    config = property(lambda self: self.root / "config.yaml")
    log = property(lambda self: self.root / "log.jsonl")
    last = property(lambda self: self.root / "last")
    best = property(lambda self: self.root / "best")
    noise = property(lambda self: self.root / "noise_index.npy")
    pair_scores = property(lambda self: self.root / "pair_scores.csv")


def append_log(path: Path, record: dict[str, Any]) -> None:
    """Add one epoch's line; the file is rewritten atomically, so a kill never leaves half a line."""
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    atomic_write_text(path, old + json.dumps(record) + "\n")


def truncate_log(path: Path, epochs_done: int) -> None:
    """Drop log lines of epochs a resumed run will redo (logged before a checkpoint that never landed)."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln and json.loads(ln)["epoch"] <= epochs_done]
    atomic_write_text(path, "".join(ln + "\n" for ln in keep))


def recover_interrupted_writes(run: RunDir) -> None:
    """Clear what a kill in the middle of a write leaves beside the final names, before a resume reads them.

    Temporary files of :func:`~disncl.io.atomic_write` (``.NAME.*.tmp``) and ``last.tmp``/``best.tmp``
    folders are incomplete by construction and removed. ``last.old`` without ``last`` (a kill between
    :func:`~disncl.io.atomic_dir`'s two renames) is the complete previous checkpoint and is renamed
    back, so the next save does not delete the only checkpoint before the new one is in place.
    """
    for tmp in run.root.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    for final, marker in ((run.last, "train_state.json"), (run.best, "model.json")):
        shutil.rmtree(final.with_name(final.name + ".tmp"), ignore_errors=True)
        old = final.with_name(final.name + ".old")
        if not (final / marker).is_file() and (old / marker).is_file():
            shutil.rmtree(final, ignore_errors=True)
            old.rename(final)
        else:
            shutil.rmtree(old, ignore_errors=True)
