"""`/runs`: submit, list, inspect, follow (SSE) and cancel runs."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse

from orchestrator.api.deps import RunDep, ServiceDep, StoreDep
from orchestrator.api.export import metrics_csv
from orchestrator.api.schemas import TERMINAL, MetricsPublic, RunCreated, RunPublic, RunsPublic
from services.config import RunConfig
from services.memory.check import fit_problem

router = APIRouter(prefix="/runs", tags=["runs"])


@router.post("", status_code=201, response_model=RunCreated)
def submit_run(cfg: RunConfig, store: StoreDep, service: ServiceDep) -> RunCreated:
    # A run whose memory plan overflows its card is refused now, not OOM-killed in an hour.
    problem = fit_problem(cfg) or service.incompatibility(cfg)
    if problem is not None:
        field, msg = problem
        raise HTTPException(status_code=422, detail=[
            {"loc": ["body", *field.split(".")], "msg": msg, "type": "value_error"}])
    run_id = store.create_run(cfg.name, cfg.model_dump(mode="json"), cfg.schedule.steps)
    return RunCreated(id=run_id, status="queued")


@router.get("", response_model=RunsPublic)
def list_runs(store: StoreDep) -> RunsPublic:
    return RunsPublic(runs=store.list())


@router.get("/{run_id}", response_model=RunPublic)
def get_run(run: RunDep) -> RunPublic:
    return run


@router.get("/{run_id}/metrics", response_model=MetricsPublic,
            responses={200: {"content": {"text/csv": {}}}})
def get_metrics(run: RunDep, store: StoreDep,
                format: Literal["json", "csv"] = Query(
                    "json", description="`csv`: one row per step, a column per metric key"),
                ) -> MetricsPublic | Response:
    steps = store.metrics(run.id)
    if format == "csv":
        return Response(metrics_csv(steps), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="{run.name}-{run.id}-metrics.csv"'})
    return MetricsPublic(run_id=run.id, steps=steps)


@router.post("/{run_id}/cancel", response_model=RunPublic)
def cancel_run(run: RunDep, store: StoreDep) -> RunPublic:
    if run.status in TERMINAL:
        raise HTTPException(status_code=409, detail=f"run {run.id} is already {run.status}")
    store.request_cancel(run.id)
    if run.status == "queued":
        store.set_status(run.id, "cancelled", "cancelled while queued",
                         error="cancelled by request before it started")
    return store.get(run.id)


@router.get("/{run_id}/events")
async def run_events(
    run: RunDep, store: StoreDep, request: Request,
    last_event_id: int | None = Header(None),
    after: int | None = Query(None, description="Resume after this event id"),
    poll_s: float = Query(0.25, gt=0, le=10),
) -> StreamingResponse:
    """Status changes, step metrics and evals as server-sent events: past ones first (or those
    after `Last-Event-ID`), then live; the stream ends after a terminal status."""
    start = last_event_id if last_event_id is not None else (after or 0)

    async def stream():
        last, idle = start, 0.0
        while not await request.is_disconnected():
            events = await asyncio.to_thread(store.events, run.id, last)
            for ev in events:
                last = ev.id
                yield f"id: {ev.id}\nevent: {ev.kind}\ndata: {ev.model_dump_json()}\n\n"
                if ev.kind == "status" and ev.data.get("status") in TERMINAL:
                    return
            idle = 0.0 if events else idle + poll_s
            if idle >= 15:  # a comment line keeps proxies from closing a quiet stream
                idle = 0.0
                yield ": keep-alive\n\n"
            await asyncio.sleep(poll_s)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
