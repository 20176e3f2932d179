"""An adapter folder as bytes and back: how a LoRA adapter travels between nodes that share
no disk (through Ray's object store)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def write_adapter(files: dict[str, bytes], dest: Path) -> Path:
    """The adapter's files as one folder at `dest`, atomically (vLLM never sees half of it)."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for rel, data in files.items():
        target = tmp / rel
        if tmp.resolve() not in target.resolve().parents:
            raise ValueError(f"adapter file {rel!r} escapes its folder")
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
