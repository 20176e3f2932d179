"""A run's adapter folders: as bytes and back (how a LoRA adapter travels between nodes that
share no disk, through Ray's object store), which `adapters/step-N` are on disk, and a portable
copy of one (`mathrl export`)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
STEP_DIR = re.compile(r"^step-(\d+)(?:\.r[0-9a-f]+)?$")
"""A published adapter folder: `step-N`, or `step-N.r<tag>` for version N published again
after a checkpoint restore (a folder of its own: services/generator/sync.py says why)."""


def adapter_dir_name(version: int, lineage: str = "") -> str:
    """The folder name of a version; `lineage`: the tag of the restore it was published after."""
    return f"step-{version}" + (f".r{lineage}" if lineage else "")


class AdapterPathError(ValueError):
    """An adapter (its files, or the run name its folder is named after) that cannot be written
    where it must go: the version's or the configuration's fault, not the process's."""


def write_adapter(files: dict[str, bytes], dest: Path) -> Path:
    """The adapter's files as one folder at `dest`, atomically (vLLM never sees half of it)."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for rel, data in files.items():
        target = tmp / rel
        if tmp.resolve() not in target.resolve().parents:
            raise AdapterPathError(f"adapter file {rel!r} escapes its folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest


def read_adapter(path: str) -> dict[str, bytes]:
    """An adapter folder as {relative path: bytes} (a LoRA adapter: a config and one
    safetensors file, MBs for a 1.5B model at rank 16)."""
    root = Path(path)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def adapter_steps(adapters_dir: str | Path) -> dict[int, Path]:
    """The complete `step-N` adapter folders under a run's `adapters/`, by step. Folders are
    renamed into place whole (the learner's `publish`), so one with both files is complete;
    `.tmp` leftovers and folders the retention deleted are not listed. A step published again
    after a restore (`step-N.r<tag>`): the folder written last, the version the run went on
    with."""
    root = Path(adapters_dir)
    if not root.is_dir():
        return {}
    found: dict[int, tuple[tuple[int, bool], Path]] = {}
    for p in root.iterdir():
        m = STEP_DIR.match(p.name)
        if m and (p / ADAPTER_CONFIG).is_file() and (p / ADAPTER_WEIGHTS).is_file():
            # (On a tie of the file system's coarse stamps, the republished one.)
            written = ((p / ADAPTER_WEIGHTS).stat().st_mtime_ns, "." in p.name)
            step = int(m.group(1))
            if step not in found or written > found[step][0]:
                found[step] = (written, p)
    return {step: found[step][1] for step in sorted(found)}


class MissingAdapter(LookupError):
    """No adapter of the asked step on disk. `steps`: those that are (empty: none yet)."""

    def __init__(self, message: str, steps: list[int]):
        super().__init__(message)
        self.steps = steps


def pick_adapter(run_dir: str | Path | None, step: int | None = None) -> tuple[int, Path]:
    """(step, folder) of the run's adapter of `step` (`<run_dir>/adapters/step-N`), or of the
    newest on disk; MissingAdapter saying which steps are there otherwise (the retention,
    `generator.keep_adapters`, deletes old ones). `run_dir` None: a run not started yet."""
    steps = adapter_steps(Path(run_dir) / "adapters") if run_dir else {}
    if not steps:
        raise MissingAdapter("no adapter on disk yet", [])
    if step is None:
        step = max(steps)
    if step not in steps:
        raise MissingAdapter(f"no adapter of step {step} on disk (older steps are deleted past "
                             f"generator.keep_adapters); available: {sorted(steps)}",
                             sorted(steps))
    return step, steps[step]


def export_adapter(adapter_dir: str | Path, out: str | Path, base: str) -> Path:
    """A PEFT adapter folder at `out` (created) that loads anywhere: `adapter_dir`'s weights,
    and its config with `base_model_name_or_path` set to `base` (the run's `model.name_or_path`
    as submitted). The learner's own config names the path it loaded the base from, which in a
    container is a snapshot in its cache and does not exist elsewhere. peft's README is left
    out: its model card names that same path."""
    src, out = Path(adapter_dir), Path(out)
    # The config first: if the retention deletes the folder meanwhile, this fails before any
    # file is written (FileNotFoundError for the caller to report).
    config = json.loads((src / ADAPTER_CONFIG).read_text())
    config["base_model_name_or_path"] = base
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / ADAPTER_WEIGHTS, out / ADAPTER_WEIGHTS)
    (out / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return out
