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


@pytest.fixture(scope="module")
def pool():
    """Two math-verify worker processes, 5 s per item (the reward and grader-form tests)."""
    from services.rewards import GraderPool

    with GraderPool(n_workers=2, timeout_s=5.0) as p:
        yield p


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from services.tinymodel import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


def lora_policy(model_dir: Path, target_modules: list[str]):
    """The tiny model (fp32) with a LoRA adapter whose B matrices are non-zero, so that
    gradients of different computations are not trivially equal."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=target_modules))
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return peft


def run_to_end(store, scheduler, run_id: str, timeout_s: float = 300.0):
    """Start `scheduler`, wait until run `run_id` ends (completed, failed or cancelled), stop
    the scheduler; the run's final record."""
    import time

    scheduler.start()
    try:
        deadline = time.monotonic() + timeout_s
        while store.get(run_id).status not in ("completed", "failed", "cancelled"):
            assert time.monotonic() < deadline, store.get(run_id)
            time.sleep(0.3)
    finally:
        scheduler.stop()
    return store.get(run_id)


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
    from orchestrator.run.stack import Stack

    cfg = tiny_config(tiny_model_dir)
    s = Stack(cfg, tmp_path_factory.mktemp("stack")).start()
    yield s
    s.stop()
