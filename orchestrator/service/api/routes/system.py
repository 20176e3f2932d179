"""Health, Prometheus metrics and the dashboard page."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Response
from fastapi.responses import FileResponse, PlainTextResponse

from orchestrator.service.api.deps import ServiceDep, StoreDep
from orchestrator.service.api.records import run_public
from orchestrator.service.api.schemas import Health

router = APIRouter(tags=["system"])
STATIC = Path(__file__).resolve().parents[2] / "static"
STATUSES = ("queued", "starting", "running", "completed", "failed", "cancelled")


@router.get("/health", response_model=Health,
            responses={503: {"model": Health, "description": "generator or scheduler down"}})
def health(service: ServiceDep, response: Response) -> Health:
    gen = service.generator_ok()
    sched = service.scheduler_ok()
    ok = gen and sched is not False
    if not ok and service.stack is not None:
        # A stack whose generator (or scheduler) is down cannot train: say so to the probes.
        response.status_code = 503
    return Health(status="ok" if ok else "degraded", generator=gen, scheduler=sched,
                  active_run=service.active_run(), queued=service.queued())


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


@router.get("/metrics", response_class=PlainTextResponse)
def prometheus(store: StoreDep) -> str:
    runs = [run_public(r) for r in store.list()]  # floats as the JSON routes give them
    lines = ["# HELP mathrl_runs Runs by status.", "# TYPE mathrl_runs gauge"]
    for status in STATUSES:
        n = sum(r.status == status for r in runs)
        lines.append(f'mathrl_runs{{status="{status}"}} {n}')
    lines += ["# HELP mathrl_run_step Optimizer steps done.", "# TYPE mathrl_run_step gauge"]
    lines += [f'mathrl_run_step{{run="{r.id}",name="{_label(r.name)}"}} {r.step}' for r in runs]
    lines += ["# HELP mathrl_run_metric Latest step metric of active runs.",
              "# TYPE mathrl_run_metric gauge"]
    for r in runs:
        if r.status in ("starting", "running"):
            lines += [f'mathrl_run_metric{{run="{r.id}",key="{_label(k)}"}} {v}'
                      for k, v in sorted(r.latest_metrics.items())]
    return "\n".join(lines) + "\n"


@router.get("/", include_in_schema=False)
def dashboard() -> FileResponse:
    return FileResponse(STATIC / "index.html")
