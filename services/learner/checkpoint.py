"""Atomic checkpoint folders: `<root>/step-N/` appears whole or not at all.

A checkpoint is written into `step-N.tmp`, every file and the folder are fsynced, then the
folder is renamed into place and the parent fsynced: a crash or a full disk mid-write leaves
the previous checkpoints as they were (and a `.tmp` folder that the next write removes). Only
the newest `keep` are kept. `meta.json` is written last, so a folder with it is complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

STEP_DIR = re.compile(r"^step-(\d+)$")
META = "meta.json"


def _fsync_tree(path: Path) -> None:
    for dirpath, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = STEP_DIR.match(p.name)
        if m and (p / META).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest(root: str | Path) -> Path | None:
    found = checkpoints(Path(root))
    return found[-1][1] if found else None


def read_meta(path: str | Path) -> dict:
    return json.loads((Path(path) / META).read_text())


def write(root: str | Path, step: int, fill: Callable[[Path], None], meta: dict, *,
          keep: int) -> Path:
    """`fill(tmp_dir)` writes the payload; then meta.json, fsync, rename, prune."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob("*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"step-{step}"
    tmp = root / f"step-{step}.tmp"
    tmp.mkdir()
    try:
        fill(tmp)
        (tmp / META).write_text(json.dumps({"step": step, **meta}))
        _fsync_tree(tmp)
        if final.exists():  # the same step written again (a redone step): replace it
            old = root / f"step-{step}.old.tmp"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for _, old in checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final
