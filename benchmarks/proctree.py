"""Peak memory of a process tree: the sum of `Pss:` over a process and all its descendants.

    with ProcTreeSampler(proc.pid) as tree:
        proc.wait()
    tree.peak_total          # bytes, the largest sum seen in one sample
    tree.table()             # [{"pid", "name", "peak_pss"}], largest first

Why PSS and not RSS: RSS counts every shared page (libtorch, the model file mapped by several
processes) once per process, so a sum of RSS over a tree of Python processes counts the same
libraries many times over. PSS divides each shared page among the processes that map it, so
the sum over a tree is what the tree holds. Read from `/proc/PID/smaps_rollup` (Linux 4.14+,
own processes only).

The tree is found from the `ppid` field of every `/proc/PID/stat`, every ~0.5 s. A process
once seen stays in the tree while it lives (same pid and start time), even if it is re-parented
to init after its parent exits, so an orphaned engine still counts.

The pure helpers (`parse_pss`, `parse_stat`, `descendants`, `short_name`) take text / maps and
are unit tested; `ProcTreeSampler` does the reading in a daemon thread.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path

PROC = Path("/proc")

# Substrings of a Python command line -> a short name (first match wins).
SCRIPT_NAMES = (
    ("vllm.entrypoints.openai.api_server", "vllm api_server"),
    ("multiprocessing.resource_tracker", "mp resource_tracker"),
    ("ray/_private/log_monitor.py", "ray log_monitor"),
    ("ray/dashboard/agent.py", "ray dashboard_agent"),
    ("ray/dashboard/dashboard.py", "ray dashboard"),
    ("ray/autoscaler/_private/monitor.py", "ray monitor"),
    ("ray/_private/runtime_env/agent", "ray runtime_env_agent"),
    ("compile_worker", "inductor compile_worker"),
    ("ray/_private/workers/default_worker.py", "ray worker"),
    ("orchestrator.cli", "driver"),
)


def parse_pss(smaps_rollup: str) -> int:
    """Bytes of the `Pss:` line of a `/proc/PID/smaps_rollup` text (0 if there is none)."""
    for line in smaps_rollup.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024  # the kernel writes kB
    return 0


def parse_stat(stat: str) -> tuple[int, int, int]:
    """(pid, ppid, start time in clock ticks) from a `/proc/PID/stat` line. The command name
    is in parentheses and may itself hold spaces and ')', so split after the last ')'."""
    pid = int(stat.split(" ", 1)[0])
    rest = stat[stat.rindex(")") + 2 :].split()
    # rest[0] is the state (field 3), so field N is rest[N - 3].
    return pid, int(rest[1]), int(rest[19])


def descendants(root: int, ppid: Mapping[int, int]) -> set[int]:
    """`root` and every process below it, from a {pid: ppid} map."""
    children: dict[int, list[int]] = {}
    for pid, parent in ppid.items():
        children.setdefault(parent, []).append(pid)
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out.add(pid)
        todo.extend(children.get(pid, ()))
    return out


def short_name(argv: list[str], comm: str = "") -> str:
    """A short label for a process from its command line (`/proc/PID/cmdline` split at NUL):
    a process title such as `VLLM::EngineCore` or `ray::Learner.train_step` (-> `ray::Learner`),
    a known Python entry point, a binary's name (`raylet`, `gcs_server`), else `comm`."""
    if not argv:
        return comm or "?"
    first = argv[0].split()[0] if argv[0].strip() else ""
    if first.startswith("ray::"):
        return first.split(".", 1)[0]
    if first.startswith("VLLM::"):
        return first
    base = os.path.basename(first)
    if not base.startswith("python"):
        return base or comm or "?"  # a binary: raylet, gcs_server, cc1plus
    joined = " ".join(argv)
    for needle, name in SCRIPT_NAMES:
        if needle in joined:
            return name
    if "multiprocessing.spawn" in joined or "--multiprocessing-fork" in joined:
        return "mp child"
    if "-c" in argv[1:]:
        return "python -c"
    script = next((a for a in argv[1:] if not a.startswith("-")), "")
    return os.path.basename(script) or base


PROVISIONAL = ("?", "ray::IDLE", "ray worker", "mp child", "python -c")


def name_rank(name: str) -> int:
    """How telling a name is: 2 for a process title (`ray::Learner`, `VLLM::Worker`), 0 for a
    name a process may still change (a Ray worker before it hosts an actor), else 1."""
    if name.startswith(("ray::", "VLLM::")) and name != "ray::IDLE":
        return 2
    return 0 if name in PROVISIONAL or name.startswith("python") else 1


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except (OSError, ValueError):  # gone, or not ours
        return None


def _stats() -> dict[int, tuple[int, int]]:
    """{pid: (ppid, start time)} of every process now."""
    out = {}
    for d in PROC.iterdir():
        if d.name.isdigit() and (text := _read(d / "stat")) is not None:
            try:
                pid, ppid, start = parse_stat(text)
            except (ValueError, IndexError):
                continue
            out[pid] = (ppid, start)
    return out


class ProcTreeSampler:
    """Samples the PSS of `root` and its descendants every `interval_s` in a daemon thread."""

    def __init__(self, root: int, *, interval_s: float = 0.5, root_name: str = "driver"):
        self.root, self.interval_s, self.root_name = root, interval_s, root_name
        self.peak_total = 0
        self.peak_at_s = 0.0
        self.samples = 0
        self.peak_by_pid: dict[int, dict] = {}  # pid -> {"name", "peak_pss"}
        self.timeline: list[tuple[float, int]] = []  # (seconds since start, total bytes)
        self._known: dict[int, int] = {}  # pid -> start time, of every process seen in the tree
        self.last: dict[int, int] = {}  # pid -> PSS bytes in the latest sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proctree", daemon=True)
        self._t0 = 0.0

    def start(self) -> ProcTreeSampler:
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def __enter__(self) -> ProcTreeSampler:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval_s):
                self.sample()  # once more: the last moment before stop() counts too
                return

    def sample(self) -> int:
        """One reading of the whole tree; returns its total PSS in bytes."""
        stats = _stats()
        ppid = {pid: s[0] for pid, s in stats.items()}
        tree = descendants(self.root, ppid)
        # Keep processes seen before (re-parented orphans) while the same process lives.
        for pid, start in self._known.items():
            if pid not in tree and stats.get(pid, (0, -1))[1] == start:
                tree |= descendants(pid, ppid)
        self._known = {pid: stats[pid][1] for pid in tree if pid in stats}
        total = 0
        self.last = {}
        for pid in tree:
            text = _read(PROC / str(pid) / "smaps_rollup")
            if text is None:
                continue
            pss = parse_pss(text)
            total += pss
            self.last[pid] = pss
            self._note(pid, pss)
        self.samples += 1
        now = time.monotonic() - self._t0
        self.timeline.append((round(now, 2), total))
        if total > self.peak_total:
            self.peak_total, self.peak_at_s = total, now
        return total

    def _note(self, pid: int, pss: int) -> None:
        row = self.peak_by_pid.get(pid)
        if pid == self.root:
            name = self.root_name
        elif row and name_rank(row["name"]) == 2:
            name = row["name"]
        else:
            # Titles change (a Ray worker is `default_worker.py`, then `ray::IDLE`, then
            # `ray::Learner`): keep the most telling name seen.
            raw = _read(PROC / str(pid) / "cmdline") or ""
            comm = (_read(PROC / str(pid) / "comm") or "").strip()
            name = short_name([a for a in raw.split("\0") if a], comm)
            if name == "mp child" and self._parent(pid) == self.root:
                name = "grader"  # GraderPool workers are spawned by the driver itself
            if row and name_rank(name) < name_rank(row["name"]):
                name = row["name"]
        if row is None:
            self.peak_by_pid[pid] = {"name": name, "peak_pss": pss}
        else:
            row["name"], row["peak_pss"] = name, max(row["peak_pss"], pss)

    @staticmethod
    def _parent(pid: int) -> int:
        text = _read(PROC / str(pid) / "stat")
        return parse_stat(text)[1] if text else -1

    def current(self) -> dict[str, int]:
        """PSS bytes per process name in the latest sample (same names summed)."""
        out: dict[str, int] = {}
        for pid, pss in self.last.items():
            name = self.peak_by_pid[pid]["name"]
            out[name] = out.get(name, 0) + pss
        return out

    def table(self, min_bytes: int = 0) -> list[dict]:
        """Every process seen, largest peak first: [{"pid", "name", "peak_pss"}]."""
        rows = [{"pid": pid, **row} for pid, row in self.peak_by_pid.items()
                if row["peak_pss"] >= min_bytes]
        return sorted(rows, key=lambda r: -r["peak_pss"])

    def summary(self) -> dict:
        """JSON-ready: peak total, when it happened, samples taken, the per-process table."""
        step = max(1, len(self.timeline) // 200)
        return {"peak_pss": self.peak_total, "peak_at_s": round(self.peak_at_s, 1),
                "samples": self.samples, "processes": self.table(),
                "timeline": self.timeline[::step]}  # (s, bytes), at most ~200 points
