"""Adapter folders on disk: the node-local copies a replica writes (adapters sent over Ray) are
pruned by what its folder holds, deleted when the run ends, and cleaned after a replica whose
process died; a version redone after a checkpoint restore gets a folder of its own, and an
export finds it. The replica runs here without Ray or vLLM (a fake server client)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import ROOT

from services.adapter_files import adapter_steps, pick_adapter
from services.config import RunConfig
from services.schemas import AdapterRef

FILES = {"adapter_config.json": b"{}", "adapter_model.safetensors": b"weights"}


class FakeClient:
    """The server's LoRA routes, recording every (name, path) it loaded."""

    def __init__(self):
        self.loaded: dict[str, str] = {}
        self.history: list[tuple[str, str]] = []

    def load_adapter(self, name: str, path: str, *, inplace: bool = False) -> None:
        self.loaded[name] = path
        self.history.append((name, path))

    def unload_adapter(self, name: str) -> None:
        self.loaded.pop(name, None)

    def models(self) -> list[str]:
        return ["base", *self.loaded]

    def close(self) -> None:
        pass


def make_replica(node: Path, *, index: int = 0, keep: int = 2):
    import ray

    from services.generator.replica import GeneratorReplica

    ray.get_runtime_context = lambda: SimpleNamespace(get_node_id=lambda: "f" * 56)
    cfg = RunConfig.model_validate({"generator": {
        "node_dir": str(node), "keep_adapters": keep, "replicas": 2,
        "adapter_transport": "ray"}})
    r = GeneratorReplica(cfg, index=index, model_path="m")
    r.client = FakeClient()
    return r


def load(r, version: int, folder: str | None = None, run: str = "run") -> None:
    ref = AdapterRef(version=version, path=f"/learner/adapters/{folder or f'step-{version}'}")
    report = r.load(run, "policy", ref, FILES)
    assert report.name in report.models


def copies(node: Path) -> list[str]:
    return sorted(p.name for p in node.rglob("step-*") if p.is_dir())


@pytest.fixture
def node(tmp_path, monkeypatch):
    import ray

    monkeypatch.setattr(ray, "get_runtime_context", ray.get_runtime_context)  # restored after
    return tmp_path / "node"


def test_copies_are_pruned_and_deleted_when_the_run_ends(node):
    r = make_replica(node)
    for v in range(5):
        load(r, v)
    assert copies(node) == ["step-3", "step-4"]
    r.release()
    assert copies(node) == []  # the run's copies went with it
    load(r, 0, run="next")
    r.stop()
    assert copies(node) == [] and not any(node.glob("replica*"))


def test_a_redone_version_gets_a_new_copy_and_the_newest_copies_stay(node):
    """After a restore the versions go back (1, 2 again, from new learner folders): the copies
    kept are the newest written, not the highest versions, and the redone version is loaded
    from another path than the one it replaces (vLLM's prefix cache keys on name and path)."""
    r = make_replica(node)
    for v in (1, 2, 3):
        load(r, v)
    load(r, 1, "step-1.r0a1b2c")
    load(r, 2, "step-2.r0a1b2c")
    assert copies(node) == ["step-1.r0a1b2c", "step-2.r0a1b2c"]
    paths = [p for name, p in r.client.history if name == "run-v2"]
    assert len(paths) == 2 and paths[0] != paths[1], paths
    r.stop()


_DIES = f"""
import os, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from pathlib import Path
from test_adapter_copies import load, make_replica
r = make_replica(Path(sys.argv[1]))
for v in range(3):
    load(r, v)
os._exit(0)  # dies without stop() or release(): a lost actor
"""


def test_a_replacement_cleans_what_a_dead_replica_left(node):
    subprocess.run([sys.executable, "-c", _DIES, str(node)], cwd=ROOT, check=True, timeout=120)
    assert copies(node) == ["step-1", "step-2"]
    other = make_replica(node, index=1)  # another live replica on the node: its folder stays
    load(other, 0)
    r = make_replica(node)  # the replacement, placed on the same node
    load(r, 3)
    load(r, 4)
    assert copies(node) == ["step-0", "step-3", "step-4"]
    r.stop()
    other.stop()
    assert copies(node) == []


def test_default_node_folder_is_the_same_in_every_ray_session(monkeypatch):
    from services.generator.replica import node_dir

    monkeypatch.delenv("MATHRL_NODE_DIR", raising=False)
    # Another process (as a replica of the next Ray session would be) finds the same folder,
    # so that what a crashed replica left there is found and deleted.
    other = subprocess.run([sys.executable, "-c", "from services.generator.replica import "
                            "node_dir; print(node_dir(None))"], capture_output=True, text=True,
                           check=True, cwd=ROOT).stdout.strip()
    assert node_dir(None) == Path(other)
    assert node_dir("/x") == Path("/x")
    monkeypatch.setenv("MATHRL_NODE_DIR", "/y")
    assert node_dir(None) == Path("/y")


def test_export_finds_the_redone_version(tmp_path):
    adapters = tmp_path / "run" / "adapters"
    for t, name in enumerate(("step-2.r0a1b2c", "step-1", "step-2")):
        (adapters / name).mkdir(parents=True)
        for f, data in FILES.items():
            (adapters / name / f).write_bytes(data)
            os.utime(adapters / name / f, (1000 + t, 1000 + t))
    # Version 2 redone after a restore: its folder is written after the first version 2's.
    os.utime(adapters / "step-2.r0a1b2c" / "adapter_model.safetensors", (2000, 2000))
    (adapters / "step-3.tmp").mkdir()  # a half-written one is not listed
    assert adapter_steps(adapters) == {1: adapters / "step-1", 2: adapters / "step-2.r0a1b2c"}
    assert pick_adapter(tmp_path / "run") == (2, adapters / "step-2.r0a1b2c")
