"""Reward functions that misbehave, one way each, for the tests: registered as an installed
plugin by `reward_helpers.install_fake_plugin` and imported by module name in the grader's
worker processes (the tests folder is on their sys.path, as on the parent's)."""

from __future__ import annotations

import os
import time

from pydantic import BaseModel, ConfigDict


class MarkerOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    marker: str
    """A file path: the call that creates it hangs (so exactly one call of a run hangs)."""


def flaky(prompt, completion, gold, metadata, options: MarkerOptions) -> float:
    """Hangs on the first call of a run, raises on completions of odd length, else 0.5."""
    try:
        fd = os.open(options.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        pass
    else:
        os.close(fd)
        time.sleep(3600)
    if len(completion) % 2:
        raise RuntimeError("odd completion")
    return 0.5


flaky.options = MarkerOptions


def with_parts(prompt, completion, gold, metadata, options):
    """Score: the metadata's `bonus`; parts named like the scorer's own keys and a plain one."""
    bonus = float(metadata.get("bonus", 0))
    return bonus, {"mean": 7.0, "std": 1.0, "echo": float(len(prompt) > 0), "gold": float(gold)}


def nan_score(prompt, completion, gold, metadata, options):
    """Not a finite number."""
    return float("nan")


def text_score(prompt, completion, gold, metadata, options):
    """A string instead of a number."""
    return "1"


def exits(prompt, completion, gold, metadata, options):
    """Kills its own process."""
    os._exit(3)


def bad_options_attr(prompt, completion, gold, metadata, options):
    """Declares something that is not a pydantic model as its options."""
    return 0.0


bad_options_attr.options = dict


def spawns_and_hangs(prompt, completion, gold, metadata, options) -> float:
    """Starts a long `sleep` (writing its PID to the file `prompt` names), then hangs: what a
    code-sandbox plugin that runs a subprocess looks like when the code never ends."""
    import subprocess

    child = subprocess.Popen(["sleep", "300"])
    with open(prompt, "w") as f:
        f.write(str(child.pid))
    time.sleep(3600)
    return 1.0
