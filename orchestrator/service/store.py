"""The run store: SQLite in WAL mode, embedded, survives orchestrator restarts.

One `events` table with an autoincrement id carries status changes, step metrics and eval
results in order; its id is the SSE event id, so a client resuming with `Last-Event-ID`
gets exactly what it missed, even across an orchestrator restart.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

RunStatus = Literal["queued", "starting", "running", "completed", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
EventKind = Literal["status", "metrics", "eval", "note"]
EvalJobStatus = Literal["queued", "running", "completed", "failed"]


# The store's own records: what a read returns. The API maps them to its wire schemas
# (orchestrator/service/api/records.py); nothing here knows about HTTP.
@dataclass(frozen=True)
class RunRecord:
    id: str
    name: str
    status: RunStatus
    step: int
    """Optimizer steps done."""
    total_steps: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: str | None
    latest_metrics: dict[str, float]
    """The newest step's metrics ({} before the first step)."""
    adapter: str | None
    run_dir: str | None
    evals: list[dict]
    """Evaluation results, oldest first."""


@dataclass(frozen=True)
class StepRecord:
    step: int
    metrics: dict[str, float]
    at: float


@dataclass(frozen=True)
class EventRecord:
    id: int
    """Autoincrement: the SSE event id."""
    run_id: str
    kind: EventKind
    step: int
    data: dict
    at: float


@dataclass(frozen=True)
class EvalJobRecord:
    """An evaluation asked for over the API (`POST /runs/{id}/evals`), run by the scheduler
    through the serving generator."""

    id: str
    run_id: str
    status: EvalJobStatus
    request: dict
    """The request as accepted (benchmarks, protocol, limit, samples, step)."""
    step: int | None
    """The adapter step evaluated (the newest when the request named none), once known."""
    result: dict | None
    """The stored eval result (`eval/<benchmark>/<metric>` keys), once completed."""
    error: str | None
    created_at: float
    finished_at: float | None


SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, config TEXT NOT NULL, status TEXT NOT NULL,
    step INTEGER NOT NULL DEFAULT 0, total_steps INTEGER NOT NULL, error TEXT,
    adapter TEXT, run_dir TEXT, cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, started_at REAL, finished_at REAL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, kind TEXT NOT NULL,
    step INTEGER NOT NULL, data TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS events_run ON events(run_id, id);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL, step INTEGER NOT NULL, data TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (run_id, step));
CREATE TABLE IF NOT EXISTS evals (
    run_id TEXT NOT NULL, step INTEGER NOT NULL, data TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS eval_jobs (
    id TEXT PRIMARY KEY, run_id TEXT NOT NULL, status TEXT NOT NULL, request TEXT NOT NULL,
    step INTEGER, result TEXT, error TEXT, created_at REAL NOT NULL, finished_at REAL);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id TEXT NOT NULL, kind TEXT NOT NULL, step INTEGER NOT NULL, path TEXT NOT NULL,
    at REAL NOT NULL);
"""


class RunStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the API and the scheduler thread, serialised by a lock:
        # writes are tiny (a row per step) and WAL lets other processes read concurrently.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _exec(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _tx(self, statements: list[tuple[str, tuple]]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    self._db.execute(sql, args)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    @staticmethod
    def _event(run_id: str, kind: str, step: int, data: dict, now: float) -> tuple[str, tuple]:
        return ("INSERT INTO events (run_id, kind, step, data, at) VALUES (?, ?, ?, ?, ?)",
                (run_id, kind, step, json.dumps(data), now))

    # ---------------------------------------------------------------- runs
    def create_run(self, name: str, config: dict, total_steps: int) -> str:
        run_id = uuid.uuid4().hex[:12]
        now = time.time()
        self._tx([
            ("INSERT INTO runs (id, name, config, status, total_steps, created_at) "
             "VALUES (?, ?, ?, 'queued', ?, ?)",
             (run_id, name, json.dumps(config), total_steps, now)),
            self._event(run_id, "status", 0, {"status": "queued", "reason": "submitted"}, now),
        ])
        return run_id

    def set_status(self, run_id: str, status: str, reason: str = "", *,
                   error: str | None = None) -> None:
        now = time.time()
        row = self._exec("SELECT step FROM runs WHERE id = ?", (run_id,))
        step = row[0]["step"] if row else 0
        sets = ["status = ?"]
        args: list = [status]
        if status == "starting":
            sets.append("started_at = ?")
            args.append(now)
        if status in TERMINAL:
            sets.append("finished_at = ?")
            args.append(now)
        if error is not None:
            sets.append("error = ?")
            args.append(error)
        self._tx([
            (f"UPDATE runs SET {', '.join(sets)} WHERE id = ?", (*args, run_id)),
            self._event(run_id, "status", step, {"status": status, "reason": reason}, now),
        ])

    def record_step(self, run_id: str, step: int, metrics: dict[str, float],
                    adapter: str | None, adapter_path: str | None) -> None:
        now = time.time()
        stmts = [
            ("INSERT OR REPLACE INTO metrics (run_id, step, data, at) VALUES (?, ?, ?, ?)",
             (run_id, step, json.dumps(metrics), now)),
            ("UPDATE runs SET step = ?, adapter = ? WHERE id = ?", (step, adapter, run_id)),
            self._event(run_id, "metrics", step, metrics, now),
        ]
        if adapter_path:
            stmts.append(("INSERT INTO artifacts (run_id, kind, step, path, at) "
                          "VALUES (?, 'policy', ?, ?, ?)", (run_id, step, adapter_path, now)))
        self._tx(stmts)

    def record_eval(self, run_id: str, step: int, result: dict) -> None:
        now = time.time()
        data = {"step": step, **result}
        self._tx([
            ("INSERT INTO evals (run_id, step, data, at) VALUES (?, ?, ?, ?)",
             (run_id, step, json.dumps(data), now)),
            self._event(run_id, "eval", step, data, now),
        ])

    def claim(self, run_id: str, reason: str) -> bool:
        """queued -> starting, atomically: False if the run left `queued` meanwhile (a cancel
        racing the scheduler's pick), so it never shows cancelled -> running."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute("UPDATE runs SET status = 'starting', started_at = ? "
                                       "WHERE id = ? AND status = 'queued'", (now, run_id))
                if cur.rowcount == 1:
                    step = self._db.execute("SELECT step FROM runs WHERE id = ?",
                                            (run_id,)).fetchone()[0]
                    self._db.execute(*self._event(run_id, "status", step,
                                                  {"status": "starting", "reason": reason}, now))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return cur.rowcount == 1

    def record_note(self, run_id: str, step: int, message: str) -> None:
        """A `note` event: something a person following the run should know (a fault and how
        the run recovered, a resume, a checkpoint that could not be written)."""
        self._tx([self._event(run_id, "note", step, {"message": message}, time.time())])

    def requeue(self, run_id: str, reason: str) -> None:
        """Back to `queued` to be continued from its checkpoint (resume); its metrics stay."""
        now = time.time()
        row = self._exec("SELECT step FROM runs WHERE id = ?", (run_id,))
        step = row[0]["step"] if row else 0
        self._tx([
            ("UPDATE runs SET status = 'queued', error = NULL, finished_at = NULL, "
             "cancel_requested = 0 WHERE id = ?", (run_id,)),
            self._event(run_id, "status", step, {"status": "queued", "reason": reason}, now),
        ])

    def set_run_dir(self, run_id: str, run_dir: str) -> None:
        self._exec("UPDATE runs SET run_dir = ? WHERE id = ?", (run_dir, run_id))

    def request_cancel(self, run_id: str) -> None:
        self._exec("UPDATE runs SET cancel_requested = 1 WHERE id = ?", (run_id,))

    def cancel_requested(self, run_id: str) -> bool:
        rows = self._exec("SELECT cancel_requested FROM runs WHERE id = ?", (run_id,))
        return bool(rows and rows[0]["cancel_requested"])

    # ---------------------------------------------------------------- reads
    def config(self, run_id: str) -> dict:
        return json.loads(self._exec("SELECT config FROM runs WHERE id = ?", (run_id,))[0][0])

    def _record(self, row: sqlite3.Row) -> RunRecord:
        latest = self._exec("SELECT data FROM metrics WHERE run_id = ? ORDER BY step DESC "
                            "LIMIT 1", (row["id"],))
        evals = self._exec("SELECT data FROM evals WHERE run_id = ? ORDER BY rowid", (row["id"],))
        return RunRecord(
            id=row["id"], name=row["name"], status=row["status"], step=row["step"],
            total_steps=row["total_steps"], created_at=row["created_at"],
            started_at=row["started_at"], finished_at=row["finished_at"], error=row["error"],
            latest_metrics=json.loads(latest[0][0]) if latest else {},
            adapter=row["adapter"], run_dir=row["run_dir"],
            evals=[json.loads(e[0]) for e in evals],
        )

    def get(self, run_id: str) -> RunRecord | None:
        rows = self._exec("SELECT * FROM runs WHERE id = ?", (run_id,))
        return self._record(rows[0]) if rows else None

    def list(self) -> list[RunRecord]:
        rows = self._exec("SELECT * FROM runs ORDER BY created_at DESC, rowid DESC")
        return [self._record(r) for r in rows]

    def ids_with_status(self, *statuses: str) -> list[str]:
        marks = ",".join("?" * len(statuses))
        rows = self._exec(f"SELECT id FROM runs WHERE status IN ({marks}) "
                          "ORDER BY created_at, rowid", statuses)
        return [r["id"] for r in rows]

    def metrics(self, run_id: str) -> list[StepRecord]:
        rows = self._exec("SELECT step, data, at FROM metrics WHERE run_id = ? ORDER BY step",
                          (run_id,))
        return [StepRecord(step=r["step"], metrics=json.loads(r["data"]), at=r["at"])
                for r in rows]

    def events(self, run_id: str, after: int = 0) -> list[EventRecord]:
        rows = self._exec("SELECT * FROM events WHERE run_id = ? AND id > ? ORDER BY id",
                          (run_id, after))
        return [EventRecord(id=r["id"], run_id=r["run_id"], kind=r["kind"], step=r["step"],
                            data=json.loads(r["data"]), at=r["at"]) for r in rows]

    # ---------------------------------------------------------------- evaluations on request
    def create_eval_job(self, run_id: str, request: dict) -> str:
        job_id = uuid.uuid4().hex[:12]
        self._tx([("INSERT INTO eval_jobs (id, run_id, status, request, step, created_at) "
                   "VALUES (?, ?, 'queued', ?, ?, ?)",
                   (job_id, run_id, json.dumps(request), request.get("step"), time.time()))])
        return job_id

    def _eval_job(self, r: sqlite3.Row) -> EvalJobRecord:
        return EvalJobRecord(
            id=r["id"], run_id=r["run_id"], status=r["status"], request=json.loads(r["request"]),
            step=r["step"], result=json.loads(r["result"]) if r["result"] else None,
            error=r["error"], created_at=r["created_at"], finished_at=r["finished_at"])

    def eval_job(self, job_id: str) -> EvalJobRecord | None:
        rows = self._exec("SELECT * FROM eval_jobs WHERE id = ?", (job_id,))
        return self._eval_job(rows[0]) if rows else None

    def eval_jobs(self, run_id: str | None = None, *, status: str | None = None
                  ) -> list[EvalJobRecord]:
        """Oldest first; filtered by run and/or status."""
        where, args = [], []
        for col, val in (("run_id", run_id), ("status", status)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        sql = "SELECT * FROM eval_jobs" + (" WHERE " + " AND ".join(where) if where else "")
        return [self._eval_job(r) for r in self._exec(sql + " ORDER BY created_at, rowid",
                                                      tuple(args))]

    def start_eval_job(self, job_id: str, step: int) -> None:
        self._tx([("UPDATE eval_jobs SET status = 'running', step = ? WHERE id = ?",
                   (step, job_id))])

    def finish_eval_job(self, job_id: str, *, result: dict | None = None,
                        error: str | None = None) -> None:
        """completed with `result` (also stored as an eval of the run, with its event), or
        failed with `error`, in one transaction."""
        job = self.eval_job(job_id)
        now = time.time()
        status = "failed" if error is not None else "completed"
        stmts = [("UPDATE eval_jobs SET status = ?, result = ?, error = ?, finished_at = ? "
                  "WHERE id = ?", (status, json.dumps(result) if result is not None else None,
                                   error, now, job_id))]
        if result is not None:
            data = {"step": job.step, **result}
            stmts += [("INSERT INTO evals (run_id, step, data, at) VALUES (?, ?, ?, ?)",
                       (job.run_id, job.step, json.dumps(data), now)),
                      self._event(job.run_id, "eval", job.step, data, now)]
        self._tx(stmts)

    def fail_unfinished_eval_jobs(self, reason: str) -> None:
        """At start: a job that was running when the orchestrator stopped is failed, not lost."""
        self._tx([("UPDATE eval_jobs SET status = 'failed', error = ?, finished_at = ? "
                   "WHERE status = 'running'", (reason, time.time()))])
