"""Shared fixtures: a tiny model built offline, and one real vLLM server + Ray per session."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from services.config import RunConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from services.tinymodel import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


def set_dotted(data: dict, **changes) -> dict:
    """Set nested keys given as `section__field=value` (in place); returns `data`."""
    for dotted, value in changes.items():
        node = data
        *head, last = dotted.split("__")
        for k in head:
            node = node[k]
        node[last] = value
    return data


def tiny_config(model_dir: Path, **overrides) -> RunConfig:
    """configs/tiny-cpu.toml pointed at the test's tiny model and a free port."""
    data = load_config(ROOT / "configs" / "tiny-cpu.toml").model_dump()
    data["model"]["name_or_path"] = str(model_dir)
    data["generator"]["port"] = free_port()
    set_dotted(data, **overrides)
    return RunConfig.model_validate(data)


@pytest.fixture(scope="session")
def stack(tiny_model_dir, tmp_path_factory):
    """One vLLM server (LoRA sync mode) and one local Ray for the whole session."""
    from orchestrator.stack import Stack

    cfg = tiny_config(tiny_model_dir)
    s = Stack(cfg, tmp_path_factory.mktemp("stack")).start()
    yield s
    s.stop()
