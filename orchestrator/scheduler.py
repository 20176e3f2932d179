"""One GPU, one active run: queued runs start in FIFO order on the shared generator/learner.

A run is stepped here (not inside `GRPOLoop.run`) so that cancel requests and shutdown are
checked between steps: a cancelled run stops after its current step and keeps its adapter.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from orchestrator.evaluate import Evaluator
from orchestrator.recorder import RunRecorder
from orchestrator.stack import Stack, prepare_run
from orchestrator.store import RunStore
from orchestrator.trackers import open_trackers
from services.config import RunConfig
from services.rewards import GraderPool

log = logging.getLogger("mathrl.scheduler")


class Scheduler:
    def __init__(self, store: RunStore, stack: Stack, work_dir: Path, *, poll_s: float = 0.5):
        self.store = store
        self.stack = stack
        self.work_dir = Path(work_dir)
        self.poll_s = poll_s
        self.active: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="scheduler", daemon=True)

    def start(self) -> None:
        # Runs left active by a previous orchestrator process cannot be continued yet
        # (no resume): record why they ended instead of leaving them "running" forever.
        for run_id in self.store.ids_with_status("starting", "running"):
            self.store.set_status(run_id, "failed", "orchestrator restarted",
                                  error="the orchestrator stopped while this run was active")
            log.warning("run %s was active when the orchestrator stopped: marked failed", run_id)
        self._thread.start()

    def stop(self, timeout_s: float = 120.0) -> None:
        self._stop.set()
        if self.active is not None:
            log.info("stopping: run %s ends after its current step", self.active)
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def queued(self) -> int:
        return len(self.store.ids_with_status("queued"))

    def _main(self) -> None:
        while not self._stop.is_set():
            queued = self.store.ids_with_status("queued")
            if not queued:
                self._stop.wait(self.poll_s)
                continue
            self.active = queued[0]
            try:
                self._run(queued[0])
            finally:
                self.active = None

    def _run(self, run_id: str) -> None:
        store = self.store
        cfg = RunConfig.model_validate(store.config(run_id))
        rec = RunRecorder(store, run_id, cfg.name, cfg.schedule.steps)
        rec.status("starting", "picked from the queue")
        run_dir = self.work_dir / "runs" / run_id
        store.set_run_dir(run_id, str(run_dir))
        handle = eval_pool = None
        step = 0
        try:
            rec.trackers = open_trackers(cfg, run_dir, name=f"{cfg.name}-{run_id}")
            log.info("run %s: run dir %s, trackers: %s", run_id, run_dir, rec.trackers.describe())
            handle = prepare_run(self.stack, cfg, run_dir, run_name=f"{cfg.name}-{run_id[:6]}")
            loop = handle.loop
            evaluate = None
            if cfg.eval.enabled:
                eval_pool = GraderPool(n_workers=cfg.reward.num_workers,
                                       timeout_s=cfg.reward.timeout_s)
                evaluate = Evaluator(cfg, handle.scorer.tokenizer, self.stack.client, eval_pool)
                rec.eval(0, evaluate(handle.sync.served))
            rec.status("running", "generator and learner ready")
            while loop.state.step < cfg.schedule.steps:
                if store.cancel_requested(run_id):
                    rec.status("cancelled", f"cancelled after step {step}",
                               error=f"cancelled by request after step {step}")
                    return
                if self._stop.is_set():
                    rec.status("failed", "orchestrator shut down",
                               error=f"the orchestrator shut down after step {step}")
                    return
                metrics = loop.step()
                step = loop.state.step
                ref = loop.last_adapter
                rec.step(step, metrics, handle.sync.served, ref.path if ref else None)
                every = cfg.eval.every_n_steps
                if evaluate and every and step % every == 0 and step < cfg.schedule.steps:
                    rec.eval(step, evaluate(handle.sync.served))
            if evaluate:
                rec.eval(step, evaluate(handle.sync.served))
            rec.status("completed", f"{step} steps")
        except Exception as e:  # noqa: BLE001 - any failure ends this run, not the service
            log.debug("run %s failed at step %d", run_id, step, exc_info=True)  # file only
            rec.status("failed", f"error at step {step}",
                       error=f"step {step}: {type(e).__name__}: {e}"[:4000])
        finally:
            rec.close()
            if eval_pool is not None:
                eval_pool.close()
            if handle is not None:
                handle.close()
