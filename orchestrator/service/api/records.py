"""Run store records -> REST responses: the one place where the API's wire schemas meet the
store's own records (the store imports nothing of the API). Each schema reads the attributes it
declares, so a field added to a record reaches the API only when its schema declares it."""

from __future__ import annotations

from orchestrator.service.api.schemas import EvalJobPublic, Event, RunPublic, StepMetrics
from orchestrator.service.store import EvalJobRecord, EventRecord, RunRecord, StepRecord


def run_public(r: RunRecord) -> RunPublic:
    return RunPublic.model_validate(r, from_attributes=True)


def step_metrics(r: StepRecord) -> StepMetrics:
    return StepMetrics.model_validate(r, from_attributes=True)


def event(r: EventRecord) -> Event:
    return Event.model_validate(r, from_attributes=True)


def eval_job_public(r: EvalJobRecord) -> EvalJobPublic:
    return EvalJobPublic.model_validate(r, from_attributes=True)
