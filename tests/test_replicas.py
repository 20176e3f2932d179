"""Two generator replicas on two Ray nodes of this host, adapters sent over Ray (no shared
disk), one run through `mathrl up --generators 2`: both replicas sample, both load every
version from their own node's folder, and killing one mid-run loses no step."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, tiny_config
from test_service import Up, _toml

pytestmark = pytest.mark.slow
STEPS = 100
KILL_AFTER = 3
LOADED = re.compile(r"Loaded new LoRA adapter: name '([^']+)', path '([^']+)'")


class RayNodes:
    """tests/ray_nodes.py in its own process group: two nodes, stopped by PID."""

    def __init__(self, home: Path):
        self.dirs = [home / "node-a", home / "node-b"]
        # Short temp dirs: Ray's socket paths must stay under ~107 bytes.
        self.temps = [f"/tmp/mrl-{os.getpid()}-{x}" for x in "ab"]
        self.log = home / "ray_nodes.log"
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "ray_nodes.py"), self.temps[0],
             str(self.dirs[0]), self.temps[1], str(self.dirs[1])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(self.log, "wb"),  # noqa: SIM115
            text=True, start_new_session=True)
        self.address = self.proc.stdout.readline().strip()
        assert self.address, self.log.read_text()[-3000:]
        self.node_dirs = dict(self.proc.stdout.readline().split()[1:] for _ in range(2))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything of ours left in its group
        except ProcessLookupError:
            pass
        for t in self.temps:
            subprocess.run(["rm", "-rf", t], check=False)


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return False
    return False


def _server_pid(port: int, ancestor: int) -> int:
    """The vLLM server on `port` that our Ray nodes started (never one of someone else's)."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"vllm.entrypoints.openai.api_server" in b" ".join(argv) \
                and str(port).encode() in argv and _descends_from(int(d.name), ancestor):
            return int(d.name)
    raise AssertionError(f"no vLLM server of ours on port {port}")


def _loads(log: Path) -> dict[int, str]:
    """{version: folder} of every versioned adapter this replica's server loaded."""
    out = {}
    for name, path in LOADED.findall(log.read_text(errors="replace")):
        if (m := re.search(r"-v(\d+)$", name)) is not None:
            out[int(m.group(1))] = path
    return out


def test_two_replicas_on_two_nodes_without_a_shared_disk(tiny_model_dir, tmp_path):
    nodes = RayNodes(tmp_path)
    up = None
    try:
        cfg = tiny_config(tiny_model_dir, schedule__steps=STEPS,
                          generator__adapter_transport="ray")
        (tmp_path / "stack.toml").write_text(_toml(cfg))
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # join on loopback (ray_nodes.py)
        up = Up(tmp_path / "stack.toml", tmp_path, extra=[
            "--ray-address", nodes.address, "--generators", "2"])
        client = up.start()
        run_id = client.submit(cfg.model_dump(mode="json")).id
        port = cfg.generator.port
        killed_at = None
        deadline = time.monotonic() + 900
        while (run := client.run(run_id)).status not in ("completed", "failed", "cancelled"):
            assert time.monotonic() < deadline, run
            if killed_at is None and run.step >= KILL_AFTER:
                os.killpg(_server_pid(port + 1, nodes.proc.pid), signal.SIGKILL)
                killed_at = run.step
            time.sleep(0.2)
        assert run.status == "completed", (run, (tmp_path / "up.log").read_text()[-3000:])
        metrics = client.metrics(run_id).steps
    finally:
        if up is not None:
            up.stop()
        nodes.stop()
        os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)

    from orchestrator.service.store import RunStore

    notes = [e.data["message"] for e in RunStore(tmp_path / "runs.db").events(run_id)
             if e.kind == "note"]
    # No step lost: each recorded once, in order.
    assert [m.step for m in metrics] == list(range(1, STEPS + 1))
    lost = [n for n in notes if "replica 1" in n and "failed" in n]
    back = [n for n in notes if "replica 1 is back" in n]
    assert lost and back, notes
    per_step = {m.step: (m.metrics["generator/replica0_prompts"],
                         m.metrics["generator/replica1_prompts"]) for m in metrics}
    n_prompts = cfg.rollout.prompts_per_step
    # Both sample every step before the kill; replica 0 alone while 1 is down; both again
    # once it is back (and it is back well before the run ends).
    assert all(a > 0 and b > 0 for s, (a, b) in per_step.items() if s <= killed_at - 1)
    alone = [s for s, (a, b) in per_step.items() if b == 0]
    assert alone and all(per_step[s][0] == n_prompts for s in alone)
    rejoined = min(s for s, (a, b) in per_step.items() if s > max(alone))
    assert all(a > 0 and b > 0 for s, (a, b) in per_step.items() if s >= rejoined)
    assert rejoined < STEPS - 5, per_step

    # Each replica loaded its versions from its own node's folder, never the learner's.
    dirs = {str(p) for p in nodes.dirs}
    loads = []
    for node_dir in nodes.node_dirs.values():
        for log in sorted(Path(node_dir, "logs").glob("generator-r*.log")):
            loads.append((log.name, node_dir, _loads(log)))
    assert sorted(x[0] for x in loads) == ["generator-r0.log", "generator-r1.log"]
    assert {x[1] for x in loads} == dirs, "the two replicas must sit on the two nodes"
    for _name, node_dir, versions in loads:
        assert all(p.startswith(node_dir + "/") for p in versions.values()), versions
    by_name = {x[0]: x[2] for x in loads}
    # Replica 0 served every version; replica 1 all but those while it was down, the last too.
    assert set(by_name["generator-r0.log"]) == set(range(STEPS + 1))
    missing = set(range(STEPS + 1)) - set(by_name["generator-r1.log"])
    assert missing and max(missing) < STEPS and min(missing) >= killed_at - 1
    assert missing == set(range(min(missing), max(missing) + 1)), missing
