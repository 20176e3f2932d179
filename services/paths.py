"""Where a run may read from: model directories, Hugging Face ids, data files under data roots.

These checks run inside the API's request handler, so they only look at the string and at
most `stat` a path: no download, no file read. A hub id is checked for its form only; whether
it exists is found out when the scheduler starts the run (and shown as its status reason).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from huggingface_hub.utils import HFValidationError, validate_repo_id

HUB_HINT = "a Hugging Face id looks like `org/name`"


def is_hub_id(name: str) -> bool:
    """`org/name` or `name` as the Hub accepts it (form only; nothing is looked up)."""
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def is_hub_dataset(name: str) -> bool:
    """A dataset id with an optional config after a colon (`openai/gsm8k:main`)."""
    repo, sep, config = name.partition(":")
    return is_hub_id(repo) and (not sep or is_hub_id(config))


def model_problem(name_or_path: str) -> str | None:
    """Why `model.name_or_path` cannot be used, or None. An existing directory is a local
    model; anything else must have the form of a hub id (a missing local path is an error here,
    never a hub lookup)."""
    try:
        local = Path(name_or_path).expanduser()
        if local.is_dir():
            return None
        exists = local.exists()
    except (OSError, ValueError):  # a name the OS refuses (NUL byte, too long)
        exists = False
    if exists:
        return f"{name_or_path!r} is a file, not a model directory"
    if is_hub_id(name_or_path):
        return None
    return (f"no directory {name_or_path!r} (a local model must be an existing directory; "
            f"{HUB_HINT})")


def default_data_roots(work_dir: Path, extra: Iterable[Path] = (),
                       cwd: Path | None = None) -> list[Path]:
    """The folders data files may come from: the work dir, `./data`, `../shared/data` (the
    data folder beside a checkout) and the operator's `MATHRL_DATA_DIRS`."""
    cwd = cwd or Path.cwd()
    return [Path(work_dir), cwd / "data", cwd.parent / "shared" / "data", *map(Path, extra)]


def data_file_problem(path: str, roots: Sequence[Path]) -> str | None:
    """Why `path` is not a readable data file for a run, or None. It must resolve (symlinks
    followed) to a regular file inside one of `roots`: not a device (`/dev/zero` never ends),
    a FIFO or a directory, and nothing elsewhere on the server's disk."""
    try:
        real = Path(path).expanduser().resolve(strict=True)
        regular = real.is_file()
    except (OSError, ValueError, RuntimeError):  # missing, unreadable, a symlink loop, NUL
        return f"no such file {path!r} on the server"
    if not regular:
        return f"{path!r} is not a regular file"
    resolved = []
    for root in roots:
        try:
            resolved.append(Path(root).expanduser().resolve())
        except (OSError, RuntimeError):
            continue
    if not any(real.is_relative_to(r) for r in resolved):
        shown = os.pathsep.join(str(r) for r in resolved)
        return (f"{path!r} is outside the data folders ({shown}); put it in one or add its "
                "folder to MATHRL_DATA_DIRS")
    return None


def source_problem(source: str, path: str | None, roots: Sequence[Path]) -> str | None:
    """`data.path` / `eval.path` for their `source`: a dataset id for `hf`, nothing for
    `arith`, else a data file."""
    if not path or source == "arith":
        return None
    if source == "hf":
        return None if is_hub_dataset(path) else (
            f"{path!r} is not a Hugging Face dataset id (`org/name` or `org/name:config`)")
    return data_file_problem(path, roots)
