"""Where a service run's progress goes: the run store (API, SSE, dashboard), the console log
of `mathrl up`, and the run's experiment trackers, all from one call per event."""

from __future__ import annotations

import logging

from orchestrator.run.metrics import format_eval, format_step
from orchestrator.run.trackers import Trackers
from orchestrator.service.store import RunStore

log = logging.getLogger("mathrl.run")


class RunRecorder:
    def __init__(self, store: RunStore, run_id: str, name: str, total_steps: int):
        self.store, self.run_id, self.total = store, run_id, total_steps
        self.label = f"run {run_id} ({name})"
        self.trackers = Trackers()
        """Replaced by the run's own once they are open."""
        self.final = "failed"
        """The last status set; the trackers close with it."""

    def status(self, status: str, reason: str = "", *, error: str | None = None) -> None:
        self.store.set_status(self.run_id, status, reason, error=error)
        self.final = status
        detail = error if status == "failed" and error else reason
        level = logging.WARNING if status == "failed" else logging.INFO
        log.log(level, "%s: %s%s", self.label, status, f" ({detail})" if detail else "")

    def step(self, step: int, metrics: dict[str, float], adapter: str | None,
             adapter_path: str | None) -> None:
        self.store.record_step(self.run_id, step, metrics, adapter, adapter_path)
        log.info("%s: %s", self.label, format_step(step, self.total, metrics))
        self.trackers.log(step, metrics)

    def eval(self, step: int, result: dict) -> None:
        self.store.record_eval(self.run_id, step, result)
        log.info("%s: %s", self.label, format_eval(step, result))
        self.trackers.log_eval(step, result)

    def claim(self) -> bool:
        """queued -> starting (atomic against a racing cancel); False if no longer queued."""
        if not self.store.claim(self.run_id, "picked from the queue"):
            return False
        self.final = "starting"
        log.info("%s: starting (picked from the queue)", self.label)
        return True

    def note(self, step: int, message: str) -> None:
        self.store.record_note(self.run_id, step, message)
        log.warning("%s: %s", self.label, message)

    def close(self) -> None:
        self.trackers.close(self.final)
