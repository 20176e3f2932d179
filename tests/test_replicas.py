"""Two generator replicas on two Ray nodes of this host, adapters sent over Ray (no shared
disk), one run through `mathrl up --generators 2`: both replicas sample, both load every
version from their own node's folder, killing one's vLLM mid-run and later the other's actor
process (a lost actor, replaced by Ray) loses no step and restores no checkpoint, the lost
actor's server goes with it, and no adapter copy outlives the run on either node."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, free_port, tiny_config
from test_service import Up, _toml

from services.adapter_files import STEP_DIR

pytestmark = pytest.mark.slow
STEPS = 100
KILL_AFTER = 3
LOADED = re.compile(r"Loaded new LoRA adapter: name '([^']+)', path '([^']+)'")


def free_ports(n: int) -> int:
    """A port p with p .. p+n-1 all free on loopback (replica i listens on port + i)."""
    for _ in range(200):
        p, held = free_port(), []
        try:
            for i in range(n):
                held.append(socket.socket())
                held[-1].bind(("127.0.0.1", p + i))
            return p
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise AssertionError(f"no {n} consecutive free ports")


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


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _group_alive(pgid: int) -> bool:
    """Some process of group `pgid` still runs (a zombie waiting for its reaper does not)."""
    for d in Path("/proc").iterdir():
        try:
            stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(stat[2]) == pgid and stat[0] != "Z":
            return True
    return False


def _copies(node_dir: str) -> dict[str, int]:
    """Adapter copies per replica folder of a node (`replica<i>-*/<run>/step-*`)."""
    out: dict[str, int] = {}
    for p in Path(node_dir).glob("replica*/*/step-*"):
        if STEP_DIR.match(p.name):
            out[p.parent.parent.name] = out.get(p.parent.parent.name, 0) + 1
    return out


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
        cfg = tiny_config(tiny_model_dir, schedule__steps=STEPS, generator__port=free_ports(2),
                          generator__adapter_transport="ray")
        keep = cfg.generator.keep_adapters
        (tmp_path / "stack.toml").write_text(_toml(cfg))
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # join on loopback (ray_nodes.py)
        up = Up(tmp_path / "stack.toml", tmp_path, extra=[
            "--ray-address", nodes.address, "--generators", "2"])
        client = up.start()
        run_id = client.submit(cfg.model_dump(mode="json")).id
        port = cfg.generator.port
        killed_at = actor_killed_at = old_group = None
        most = 0  # copies one replica folder held at once
        deadline = time.monotonic() + 900
        while (run := client.run(run_id)).status not in ("completed", "failed", "cancelled"):
            assert time.monotonic() < deadline, run
            if killed_at is None and run.step >= KILL_AFTER:
                os.killpg(_server_pid(port + 1, nodes.proc.pid), signal.SIGKILL)
                killed_at = run.step
            elif killed_at is not None and actor_killed_at is None and any(
                    m.step > killed_at + 1 and m.metrics["generator/replica1_prompts"] > 0
                    for m in client.metrics(run_id).steps):
                # Replica 1 is back: now lose replica 0's actor itself (its process, the
                # parent of its vLLM server), as when its node's Ray worker crashes.
                old_group = _server_pid(port, nodes.proc.pid)
                os.kill(_parent(old_group), signal.SIGKILL)
                actor_killed_at = run.step
            for node_dir in nodes.node_dirs.values():
                most = max([most, *_copies(node_dir).values()])
            time.sleep(0.2)
        assert run.status == "completed", (run, (tmp_path / "up.log").read_text()[-3000:])
        metrics = client.metrics(run_id).steps
        # The run's copies are deleted when it ends (its replicas' release), on both nodes;
        # the lost actor's folder by its replacement, which found its lock free.
        deadline = time.monotonic() + 60
        while any(_copies(d) for d in nodes.node_dirs.values()):
            assert time.monotonic() < deadline, [_copies(d) for d in nodes.node_dirs.values()]
            time.sleep(0.5)
    finally:
        if up is not None:
            up.stop()
        nodes.stop()
        os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)

    from orchestrator.service.store import RunStore

    notes = [e.data["message"] for e in RunStore(tmp_path / "runs.db").events(run_id)
             if e.kind == "note"]
    # No step lost: each recorded once, in order; and none redone: no replica's loss sent the
    # run to its recovery path (a checkpoint restore).
    assert [m.step for m in metrics] == list(range(1, STEPS + 1))
    assert not [n for n in notes if "resumed from the checkpoint" in n], notes
    assert actor_killed_at is not None, "replica 1 never came back"
    for i in (0, 1):
        assert [n for n in notes if f"replica {i} is back" in n], notes
    # The lost actor's server went with it (its watchdog), though nothing called stop().
    assert not _group_alive(old_group)
    # Node-local copies: never more than keep (+1 while the next one is written) per replica
    # folder, however many versions a replica loaded.
    assert 0 < most <= keep + 1, most
    per_step = {m.step: (m.metrics["generator/replica0_prompts"],
                         m.metrics["generator/replica1_prompts"]) for m in metrics}
    n_prompts = cfg.rollout.prompts_per_step
    # Both sample every step before the first kill; one replica alone while the other is down
    # (replica 1 after its vLLM was killed, then replica 0 after its actor was); both again
    # once each is back (and back well before the run ends).
    assert all(a > 0 and b > 0 for s, (a, b) in per_step.items() if s <= killed_at - 1)
    alone = {i: [s for s, c in per_step.items() if c[1 - i] == 0] for i in (0, 1)}
    assert alone[0] and all(per_step[s][0] == n_prompts for s in alone[0])
    assert alone[1] and all(per_step[s][1] == n_prompts for s in alone[1])
    assert max(alone[0]) < min(alone[1]), alone  # one down window, then the other
    for down in alone.values():
        assert down == list(range(min(down), max(down) + 1)), down
    rejoined = max(alone[1]) + 1
    assert rejoined < STEPS - 5, per_step
    assert all(a > 0 and b > 0 for s, (a, b) in per_step.items()
               if max(alone[0]) < s < min(alone[1]) or s >= rejoined)

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
    # Each replica served every version but those of its own down window, the last one too.
    for log, after in (("generator-r1.log", killed_at), ("generator-r0.log", actor_killed_at)):
        missing = set(range(STEPS + 1)) - set(by_name[log])
        assert missing and max(missing) < STEPS and min(missing) >= after - 1, (log, missing)
        assert missing == set(range(min(missing), max(missing) + 1)), (log, missing)
