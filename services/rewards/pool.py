"""A pool of grader *processes* with a hard per-item wall-clock limit.

Why processes and not threads: math-verify bounds its work with ``signal.alarm``, which
only works in a process's main thread, and an alarm is not a guarantee: it fires once, so
code that swallows the exception (a bare ``except:``) runs on unbounded, and C extensions
that never check for signals cannot be interrupted at all. (CPython 3.11's own big-int
pow/multiply, ``math.factorial`` and ``re`` do check: measured, they stop within ~1 ms of
the alarm.) The only reliable bound is to SIGKILL the worker (by its own PID via
``Process.kill``) and start a new one. Workers are started with the ``spawn`` context by
default: forking a parent that runs Ray / torch / CUDA threads can deadlock the child.

Spawn re-imports the parent's ``__main__`` module in each worker (standard multiprocessing
semantics), so entry scripts need the ``if __name__ == "__main__":`` guard, and whatever
the main module imports at top level is paid again per worker start.

Start-up: workers are spawned at construction and warm up (import math_verify + sympy,
one throw-away verify) in the background, concurrently with whatever the caller does
next. ``grade`` only hands items to workers that reported ready, and an item's clock
starts when it is sent, so import time is never charged against ``timeout_s``.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait

from services.rewards.verify import verify_answer

__all__ = ["GradeOutcome", "GraderPool"]

WorkFn = Callable[[str, str], bool]
_READY = "ready"


@dataclass(frozen=True, slots=True)
class GradeOutcome:
    correct: bool
    timed_out: bool = False
    error: str | None = None


def _worker_main(conn, work_fn: WorkFn) -> None:
    """Worker loop: receive ``(index, pred, gold)``, send ``(index, correct, error)``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # no per-timeout warnings
    try:
        work_fn("1", "1")  # warm-up: imports, ANTLR parser construction, sympy caches
    except Exception:
        pass
    conn.send(_READY)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # parent went away
            return
        if msg is None:
            return
        index, pred, gold = msg
        try:
            conn.send((index, bool(work_fn(pred, gold)), None))
        except Exception as exc:
            conn.send((index, False, f"{type(exc).__name__}: {exc}"[:500]))


class _Worker:
    __slots__ = ("proc", "conn", "ready", "item", "deadline")

    def __init__(self, proc, conn, start_deadline: float) -> None:
        self.proc, self.conn = proc, conn
        self.ready = False
        self.item: int | None = None
        self.deadline = start_deadline  # start-up deadline until ready, then item deadline


class GraderPool:
    """``with GraderPool(4) as pool: outcomes = pool.grade([(pred, gold), ...])``."""

    def __init__(
        self,
        n_workers: int = 2,
        timeout_s: float = 5.0,
        *,
        start_timeout_s: float = 120.0,
        start_method: str = "spawn",
        _work_fn: WorkFn = verify_answer,
    ) -> None:
        if n_workers < 1 or timeout_s <= 0:
            raise ValueError("need n_workers >= 1 and timeout_s > 0")
        self.timeout_s, self.start_timeout_s = timeout_s, start_timeout_s
        self._ctx = mp.get_context(start_method)
        self._work_fn = _work_fn
        self._lock = threading.Lock()  # one grade() at a time; workers are not shareable
        self._closed = False
        self.respawns = 0  # observable for tests / metrics
        self._workers = [self._spawn() for _ in range(n_workers)]

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=_worker_main, args=(child, self._work_fn), daemon=True, name="mathrl-grader"
        )
        proc.start()
        child.close()  # so EOF on our end means the worker is gone
        return _Worker(proc, parent, time.monotonic() + self.start_timeout_s)

    def _replace(self, slot: int) -> None:
        w = self._workers[slot]
        try:
            w.proc.kill()  # SIGKILL to this worker's own PID; no-op if already dead
            w.proc.join(timeout=5)
            w.conn.close()
        except Exception:
            pass
        self.respawns += 1
        self._workers[slot] = self._spawn()

    def grade(self, items: list[tuple[str | None, str]]) -> list[GradeOutcome]:
        """Grade ``(extracted_pred, gold)`` pairs; one outcome per item, same order.

        ``None``/blank predictions score False without touching a worker. Never raises:
        an internal failure turns the not-yet-graded items into ``error`` outcomes.
        """
        results: list[GradeOutcome | None] = [None] * len(items)
        try:
            with self._lock:
                if self._closed:
                    raise RuntimeError("GraderPool is closed")
                self._grade_locked(items, results)
        except Exception as exc:
            err = f"grader failure: {type(exc).__name__}: {exc}"
            return [r or GradeOutcome(correct=False, error=err) for r in results]
        return [r or GradeOutcome(correct=False, error="not graded") for r in results]

    def _grade_locked(self, items, results: list[GradeOutcome | None]) -> None:
        for slot, w in enumerate(self._workers):
            if w.item is not None:  # busy since an aborted grade(): its answer would be stale
                self._replace(slot)
        pending = deque()
        for i, (pred, _gold) in enumerate(items):
            if pred is None or not pred.strip():
                results[i] = GradeOutcome(correct=False)
            else:
                pending.append(i)
        start_failures = 0
        workers = self._workers
        while pending or any(w.item is not None for w in workers):
            if start_failures > 3 * len(workers):  # e.g. broken install: don't spin forever
                for i in pending:
                    results[i] = GradeOutcome(correct=False, error="grader workers fail to start")
                pending.clear()
            for slot, w in enumerate(workers):
                if pending and w.ready and w.item is None:
                    i = pending.popleft()
                    try:
                        w.conn.send((i, items[i][0], items[i][1]))
                    except Exception as exc:  # died while idle (or unpicklable item)
                        results[i] = GradeOutcome(correct=False, error=f"send failed: {exc!r}")
                        self._replace(slot)
                        continue
                    w.item, w.deadline = i, time.monotonic() + self.timeout_s
            workers = self._workers
            now = time.monotonic()
            next_deadline = min(w.deadline for w in workers)
            handles = [w.conn for w in workers] + [w.proc.sentinel for w in workers]
            ready = wait(handles, timeout=max(0.0, next_deadline - now))
            now = time.monotonic()
            for slot, w in enumerate(workers):
                died = False
                if w.conn in ready:
                    try:
                        msg = w.conn.recv()
                    except (EOFError, OSError):
                        died = True
                    else:
                        if msg == _READY:
                            w.ready = True
                        else:
                            i, correct, err = msg
                            results[i] = GradeOutcome(correct=correct, error=err)
                            w.item = None
                        w.deadline = math.inf  # idle: nothing to time out
                elif w.proc.sentinel in ready:
                    died = True
                if died:
                    w.proc.join(timeout=1)
                    if w.item is not None:
                        code = w.proc.exitcode
                        results[w.item] = GradeOutcome(
                            correct=False, error=f"worker died (exit code {code})"
                        )
                    else:
                        start_failures += not w.ready
                    self._replace(slot)
                elif now >= w.deadline and (w.item is not None or not w.ready):
                    if w.item is not None:
                        results[w.item] = GradeOutcome(correct=False, timed_out=True)
                    else:
                        start_failures += 1
                    self._replace(slot)

    def close(self) -> None:
        """Ask workers to exit, then kill whatever is still alive. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for w in self._workers:
                try:
                    w.conn.send(None)
                except Exception:
                    pass
            for w in self._workers:
                w.proc.join(timeout=2)
                if w.proc.is_alive():
                    w.proc.kill()
                    w.proc.join(timeout=5)
                w.conn.close()

    def __enter__(self) -> GraderPool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
