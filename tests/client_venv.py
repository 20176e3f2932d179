"""A client-only install of mathrl (`pip install mathrl`, no extras) in a fresh venv, built once
per test session: tests/test_client_install.py checks it, and a test that has a running stack
can drive it with the `mathrl` this returns (`client_mathrl(tmp_path_factory)`).

The project is copied first (pyproject, README, the two packages) and installed from the copy:
a non-editable pip install builds in its source folder (`build/`, `*.egg-info`), which must not
happen in the working tree that other tests import from. pip reaches the package index for the
base dependencies (httpx, pydantic, typer, rich) and the build backend; about 30-60 s.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The interpreter of the fresh venv: MATHRL_CLIENT_PYTHON to try another (3.12, 3.13), else
# the system's python3 (not the test venv's: its site-packages would not leak, but the point
# is a Python that has never seen the service).
PYTHON = os.environ.get("MATHRL_CLIENT_PYTHON") or shutil.which("python3") or sys.executable
SOURCES = ("pyproject.toml", "README.md", "orchestrator", "services")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for the client venv's processes: none of the test venv's, no repo on
    the path, so an import can only come from what the client install put there."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "MATHRL_URL")}
    env.update(extra)
    return env


def build_client_venv(dest: Path) -> Path:
    """A venv at `dest` with mathrl installed without extras (reused when already built);
    returns its `bin/` folder."""
    bin_dir = dest / "venv" / "bin"
    done = dest / ".installed"
    if done.exists():
        return bin_dir
    src = dest / "src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    env = clean_env(PIP_DISABLE_PIP_VERSION_CHECK="1")
    subprocess.run([PYTHON, "-m", "venv", str(dest / "venv")], check=True, env=env,
                   timeout=120)
    out = subprocess.run([str(bin_dir / "pip"), "install", "-q", str(src)], env=env,
                         cwd=dest, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"pip install of the client failed:\n{out.stdout}\n{out.stderr}")
    done.touch()
    return bin_dir


def client_mathrl(tmp_path_factory) -> Path:
    """The client venv's `mathrl` (built on first use in this session's temporary folder)."""
    return build_client_venv(tmp_path_factory.getbasetemp() / "client-venv") / "mathrl"
