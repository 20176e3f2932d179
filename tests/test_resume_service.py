"""`mathrl up` killed mid-run and started again: the active run resumes from its checkpoint
and completes, nothing recorded before the kill is lost, the queue keeps its order; a
cancelled run resumes over REST; Ctrl-C in a terminal stops everything and exits 130."""

from __future__ import annotations

import os
import pty
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, tiny_config
from test_service import Up, _body, _toml, _wait

pytestmark = pytest.mark.slow


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid` (walking /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_killed_orchestrator_resumes_the_active_run(tiny_model_dir, tmp_path):
    cfg = tiny_config(tiny_model_dir, schedule__steps=3)
    (tmp_path / "stack.toml").write_text(_toml(cfg))
    up = Up(tmp_path / "stack.toml", tmp_path)
    client = up.start()
    try:
        long = client.submit(_body(cfg, name="long", schedule__steps=8)).id
        queued = client.submit(_body(cfg, name="next", schedule__steps=2)).id
        _wait(client, long, lambda r: r.step >= 3)
        before = {m.step: m.metrics for m in client.metrics(long).steps}
        os.killpg(up.proc.pid, signal.SIGKILL)  # the orchestrator's whole group: a crash
        up.proc.wait(timeout=30)
        deadline = time.monotonic() + 90  # vLLM follows its parent (PDEATHSIG)
        while not _port_free(cfg.generator.port) and time.monotonic() < deadline:
            time.sleep(0.5)
        client.close()

        t0 = time.monotonic()
        client = up.start()
        run = _wait(client, long, lambda r: r.status in ("completed", "failed"), timeout_s=400)
        assert run.status == "completed", run.error
        print(f"orchestrator SIGKILL: restart to completion {time.monotonic() - t0:.1f} s")
        after = {m.step: m.metrics for m in client.metrics(long).steps}
        assert sorted(after) == list(range(1, 9))
        for step, metrics in before.items():  # checkpointed steps are kept as they were
            assert after[step] == metrics, step
        notes = [e.data["message"] for e in client.events(long) if e.kind == "note"]
        assert any("resumed from the checkpoint of step" in n for n in notes), notes
        nxt = _wait(client, queued, lambda r: r.status == "completed", timeout_s=240)
        assert nxt.started_at >= run.finished_at  # the queue kept its order

        # A cancelled run resumes over REST, with its step numbering.
        rid = client.submit(_body(cfg, name="cancelled", schedule__steps=4)).id
        _wait(client, rid, lambda r: r.step >= 2)
        client.cancel(rid)
        _wait(client, rid, lambda r: r.status == "cancelled")
        assert client.resume(rid).status == "queued"
        done = _wait(client, rid, lambda r: r.status in ("completed", "failed"), timeout_s=240)
        assert done.status == "completed", done.error
        assert [m.step for m in client.metrics(rid).steps] == [1, 2, 3, 4]
    finally:
        client.close()
        up.stop()


def test_ctrl_c_in_a_terminal_exits_130_and_leaves_nothing(tiny_model_dir, tmp_path):
    cfg = tiny_config(tiny_model_dir, schedule__steps=3)
    (tmp_path / "stack.toml").write_text(_toml(cfg))
    port = Up(tmp_path / "stack.toml", tmp_path).port
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "up", "--config", str(tmp_path / "stack.toml"),
         "--port", str(port), "--db", str(tmp_path / "runs.db"),
         "--work-dir", str(tmp_path / "work")],
        stdin=follower, stdout=follower, stderr=follower, cwd=ROOT, start_new_session=True)
    os.close(follower)
    try:
        from orchestrator.cli.client import MathrlClient

        client = MathrlClient(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if client.health()["generator"]:
                    break
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(1)
        rid = client.submit(_body(cfg, name="ctrl-c", schedule__steps=50)).id
        _wait(client, rid, lambda r: r.step >= 1)
        tree = _descendants(proc.pid)
        assert tree, "mathrl up has no children?"
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        assert proc.wait(timeout=120) == 130
        time.sleep(2)
        survivors = [p for p in tree if _alive(p)]
        assert survivors == [], survivors
        client.close()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        os.close(leader)
