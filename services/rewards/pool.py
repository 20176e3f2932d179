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

Two kinds of work item share the workers and the limit: ``grade`` sends ``(pred, gold)`` to
the pool's work function (math-verify); ``call`` sends a reward function's entry-point value
(``module:attr``) with its arguments, which the worker imports once (``preload`` imports them
during warm-up) and calls under the reward-function contract (``functions.py``).
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any

from services.rewards.functions import call_reward, load_target
from services.rewards.verify import verify_answer

__all__ = ["CallOutcome", "GradeOutcome", "GraderPool"]

WorkFn = Callable[[str, str], bool]
Call = tuple[str, tuple]
"""A `call` item: the function's entry-point value and its `call_reward` arguments (without
the function)."""
_READY = "ready"


@dataclass(frozen=True, slots=True)
class GradeOutcome:
    correct: bool
    timed_out: bool = False
    error: str | None = None


@dataclass(frozen=True, slots=True)
class CallOutcome:
    value: Any = None
    """`(score, parts)` of a reward function (None when it failed)."""
    timed_out: bool = False
    error: str | None = None


def _run_item(work_fn: WorkFn, functions: dict[str, Callable], target: str | None,
              args: tuple) -> Any:
    if target is None:
        return bool(work_fn(*args))
    if target not in functions:
        functions[target] = load_target(target)
    return call_reward(functions[target], *args)


def _worker_main(conn, work_fn: WorkFn, preload: tuple[str, ...] = ()) -> None:
    """Worker loop: receive ``(index, target, args)``, send ``(index, value, error)``."""
    os.setsid()  # a group of its own: a kill reaches whatever a plugin started too
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # no per-timeout warnings
    try:
        work_fn("1", "1")  # warm-up: imports, ANTLR parser construction, sympy caches
    except Exception:
        pass
    functions: dict[str, Callable] = {}
    for target in preload:  # a plugin's import is never charged against an item's limit
        try:
            functions[target] = load_target(target)
        except Exception:  # the item that needs it reports the error
            pass
    conn.send(_READY)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # parent went away
            return
        if msg is None:
            return
        index, target, args = msg
        try:
            value = _run_item(work_fn, functions, target, args)
        except BaseException as exc:  # noqa: BLE001 - a plugin's SystemExit costs its item only
            conn.send((index, None, f"{type(exc).__name__}: {exc}"[:500]))
        else:
            conn.send((index, value, None))


def _kill_group(proc) -> None:
    """SIGKILL a worker and every process it started (its own process group, `setsid`)."""
    if proc.pid is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # gone already (or not yet its own group)
        pass


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
        preload: tuple[str, ...] = (),
        _work_fn: WorkFn = verify_answer,
    ) -> None:
        if n_workers < 1 or timeout_s <= 0:
            raise ValueError("need n_workers >= 1 and timeout_s > 0")
        self.timeout_s, self.start_timeout_s = timeout_s, start_timeout_s
        self._ctx = mp.get_context(start_method)
        self._work_fn = _work_fn
        self._preload = tuple(preload)
        self._lock = threading.Lock()  # one grade() at a time; workers are not shareable
        self._closed = False
        self.respawns = 0  # observable for tests / metrics
        self._start_failures = 0
        """Workers that died or ran out of time before ready, since one last got ready: past
        a few per slot (a broken install, a plugin whose import hangs) every later call fails
        its items at once instead of paying the start-up limit again and again."""
        self._workers = [self._spawn() for _ in range(n_workers)]

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=_worker_main, args=(child, self._work_fn, self._preload), daemon=True,
            name="mathrl-grader",
        )
        proc.start()
        child.close()  # so EOF on our end means the worker is gone
        return _Worker(proc, parent, time.monotonic() + self.start_timeout_s)

    def _replace(self, slot: int) -> None:
        w = self._workers[slot]
        try:
            _kill_group(w.proc)  # the worker and its children (a sandbox's subprocess)
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
        work = [None if pred is None or not pred.strip() else (None, (pred, gold))
                for pred, gold in items]
        done = {i: CallOutcome(False) for i, w in enumerate(work) if w is None}
        return [GradeOutcome(correct=bool(o.value), timed_out=o.timed_out, error=o.error)
                for o in self._run(work, done)]

    def call(self, items: list[Call]) -> list[CallOutcome]:
        """Call reward functions, ``(target, args)`` each (``args`` as ``call_reward`` takes
        them after the function); one outcome per item, same order, each under the per-item
        limit. Never raises."""
        return self._run(list(items), {})

    def _run(self, work: list[tuple[str | None, tuple] | None],
             done: dict[int, CallOutcome]) -> list[CallOutcome]:
        results: list[CallOutcome | None] = [done.get(i) for i in range(len(work))]
        try:
            with self._lock:
                if self._closed:
                    raise RuntimeError("GraderPool is closed")
                self._run_locked(work, results)
        except Exception as exc:
            err = f"grader failure: {type(exc).__name__}: {exc}"
            return [r or CallOutcome(error=err) for r in results]
        return [r or CallOutcome(error="not graded") for r in results]

    def _run_locked(self, work, results: list[CallOutcome | None]) -> None:
        for slot, w in enumerate(self._workers):
            if w.item is not None:  # busy since an aborted run: its answer would be stale
                self._replace(slot)
        pending = deque(i for i, r in enumerate(results) if r is None)
        workers = self._workers
        while pending or any(w.item is not None for w in workers):
            if self._start_failures > 3 * len(workers):  # e.g. broken install: don't spin
                for i in pending:
                    results[i] = CallOutcome(error="grader workers fail to start")
                pending.clear()
                if not any(w.item is not None for w in workers):
                    break
            for slot, w in enumerate(workers):
                if pending and w.ready and w.item is None:
                    i = pending.popleft()
                    try:
                        w.conn.send((i, *work[i]))
                    except Exception as exc:  # died while idle (or unpicklable item)
                        results[i] = CallOutcome(error=f"send failed: {exc!r}")
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
                            self._start_failures = 0
                        else:
                            i, value, err = msg
                            results[i] = CallOutcome(value=value, error=err)
                            w.item = None
                        w.deadline = math.inf  # idle: nothing to time out
                elif w.proc.sentinel in ready:
                    died = True
                if died:
                    w.proc.join(timeout=1)
                    if w.item is not None:
                        code = w.proc.exitcode
                        results[w.item] = CallOutcome(error=f"worker died (exit code {code})")
                    else:
                        self._start_failures += not w.ready
                    self._replace(slot)
                elif now >= w.deadline and (w.item is not None or not w.ready):
                    if w.item is not None:
                        results[w.item] = CallOutcome(timed_out=True)
                    else:
                        self._start_failures += 1
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
                _kill_group(w.proc)  # whatever it left behind, or it itself
                if w.proc.is_alive():
                    w.proc.kill()
                    w.proc.join(timeout=5)
                w.conn.close()

    def __enter__(self) -> GraderPool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
