"""`/runs`: submit, list, inspect, follow (SSE) and cancel runs."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse

from orchestrator.service.api.deps import RunDep, ServiceDep, StoreDep
from orchestrator.service.api.export import metrics_csv
from orchestrator.service.api.limits import PolicyDep
from orchestrator.service.api.records import event, run_public, step_metrics
from orchestrator.service.api.schemas import MetricsPublic, RunCreated, RunPublic, RunsPublic
from orchestrator.service.store import TERMINAL
from services.config import RunConfig
from services.memory.check import fit_problem
from services.rewards.submit_check import reward_problem

router = APIRouter(prefix="/runs", tags=["runs"])
MAX_EVENT_ID = 2**63 - 1


@router.post("", status_code=201, response_model=RunCreated)
def submit_run(cfg: RunConfig, store: StoreDep, service: ServiceDep,
               policy: PolicyDep) -> RunCreated:
    # A run whose memory plan overflows its card is refused now, not OOM-killed in an hour;
    # hostile paths and sizes (policy) before anything that looks at the model.
    # The plan is of this run's learner beside the generator that is running, on its card.
    # Reward functions: names installed, options valid, verifier hosts allowed and answering.
    problem = (policy.run_problem(cfg) or reward_problem(cfg.reward, policy.reward_hosts)
               or service.incompatibility(cfg)
               or fit_problem(cfg, served=service.served_config()))
    if problem is not None:
        field, msg = problem
        raise HTTPException(status_code=422, detail=[
            {"loc": ["body", *field.split(".")], "msg": msg, "type": "value_error"}])
    run_id = store.create_run(cfg.name, cfg.model_dump(mode="json"), cfg.schedule.steps)
    return RunCreated(id=run_id, status="queued")


@router.get("", response_model=RunsPublic)
def list_runs(store: StoreDep) -> RunsPublic:
    return RunsPublic(runs=[run_public(r) for r in store.list()])


@router.get("/{run_id}", response_model=RunPublic)
def get_run(run: RunDep) -> RunPublic:
    return run


@router.get("/{run_id}/metrics", response_model=MetricsPublic,
            responses={200: {"content": {"text/csv": {}}}})
def get_metrics(run: RunDep, store: StoreDep,
                format: Literal["json", "csv"] = Query(
                    "json", description="`csv`: one row per step, a column per metric key"),
                ) -> MetricsPublic | Response:
    steps = [step_metrics(s) for s in store.metrics(run.id)]
    if format == "csv":
        return Response(metrics_csv(steps, run.evals), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition":
                                 f'attachment; filename="{run.name}-{run.id}-metrics.csv"'})
    return MetricsPublic(run_id=run.id, steps=steps, evals=run.evals)


@router.post("/{run_id}/cancel", response_model=RunPublic)
def cancel_run(run: RunDep, store: StoreDep) -> RunPublic:
    if run.status in TERMINAL:
        raise HTTPException(status_code=409, detail=f"run {run.id} is already {run.status}")
    store.request_cancel(run.id)
    if run.status == "queued":
        store.set_status(run.id, "cancelled", "cancelled while queued",
                         error="cancelled by request before it started")
    return run_public(store.get(run.id))


@router.post("/{run_id}/resume", response_model=RunPublic)
def resume_run(run: RunDep, store: StoreDep) -> RunPublic:
    """Queue a failed or cancelled run again; it continues from its newest checkpoint (same
    step numbering and prompt order). 409 when it is not stopped or has no checkpoint."""
    from pathlib import Path

    from services.learner import checkpoint

    if run.status not in ("failed", "cancelled"):
        raise HTTPException(status_code=409,
                            detail=f"run {run.id} is {run.status}: only a failed or cancelled "
                                   "run can be resumed")
    ckpt = checkpoint.latest(Path(run.run_dir) / "checkpoints") if run.run_dir else None
    if ckpt is None:
        raise HTTPException(status_code=409, detail=f"run {run.id} has no checkpoint to "
                                                    "resume from")
    store.requeue(run.id, f"resume requested: continues from {ckpt.name}")
    return run_public(store.get(run.id))


def _ended(store, run_id: str) -> bool:
    run = store.get(run_id)
    return run is None or run.status in TERMINAL


@router.get("/{run_id}/events")
async def run_events(
    run: RunDep, store: StoreDep, request: Request,
    # Bounded: SQLite integers are 64-bit, and a larger id would break the open stream.
    last_event_id: int | None = Header(None, ge=0, le=MAX_EVENT_ID),
    after: int | None = Query(None, ge=0, le=MAX_EVENT_ID,
                              description="Resume after this event id"),
    poll_s: float = Query(0.25, ge=0.05, le=10,
                          description="Seconds between store polls (a tiny one would spin)"),
) -> StreamingResponse:
    """Status changes, step metrics and evals as server-sent events: past ones first (or those
    after `Last-Event-ID`), then live; the stream ends after a terminal status."""
    start = last_event_id if last_event_id is not None else (after or 0)

    async def stream():
        last, idle = start, 0.0
        while not await request.is_disconnected():
            # Status before events (one transaction writes both): a client resuming after the
            # terminal event gets an empty stream that ends, not one that never closes.
            ended = await asyncio.to_thread(_ended, store, run.id)
            events = await asyncio.to_thread(store.events, run.id, last)
            if not events and ended:
                return
            for ev in events:
                last = ev.id
                yield f"id: {ev.id}\nevent: {ev.kind}\ndata: {event(ev).model_dump_json()}\n\n"
            # A terminal status in the history is not the end when the run was resumed since:
            # the stream ends when the run is terminal now; it was before these events were
            # read, so they include its last one.
            if ended:
                return
            idle = 0.0 if events else idle + poll_s
            if idle >= 15:  # a comment line keeps proxies from closing a quiet stream
                idle = 0.0
                yield ": keep-alive\n\n"
            await asyncio.sleep(poll_s)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
