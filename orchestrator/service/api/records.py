"""Run store records -> REST responses: the one place where the API's wire schemas meet the
store's own records (the store imports nothing of the API). Every field is named, so a column
added to the store reaches the API only when a schema here asks for it."""

from __future__ import annotations

from orchestrator.service.api.schemas import Event, RunPublic, StepMetrics
from orchestrator.service.store import EventRecord, RunRecord, StepRecord


def run_public(r: RunRecord) -> RunPublic:
    return RunPublic(
        id=r.id, name=r.name, status=r.status, step=r.step, total_steps=r.total_steps,
        created_at=r.created_at, started_at=r.started_at, finished_at=r.finished_at,
        error=r.error, latest_metrics=r.latest_metrics, adapter=r.adapter, run_dir=r.run_dir,
        evals=r.evals,
    )


def step_metrics(r: StepRecord) -> StepMetrics:
    return StepMetrics(step=r.step, metrics=r.metrics, at=r.at)


def event(r: EventRecord) -> Event:
    return Event(id=r.id, run_id=r.run_id, kind=r.kind, step=r.step, data=r.data, at=r.at)
