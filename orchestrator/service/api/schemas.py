"""REST schemas, shared by the FastAPI routes and the CLI client (`orchestrator/cli/client.py`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

# The run statuses are the store's (one vocabulary); re-exported for the routes and the client.
from orchestrator.service.store import TERMINAL, RunStatus

__all__ = ["TERMINAL", "Event", "Health", "MetricsPublic", "Public", "RunCreated", "RunPublic",
           "RunStatus", "RunsPublic", "StepMetrics"]


class Public(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunCreated(Public):
    id: str
    status: RunStatus


class RunPublic(Public):
    id: str
    name: str
    status: RunStatus
    step: int
    """Optimizer steps done."""
    total_steps: int
    created_at: float
    """Unix time."""
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    """Why the run failed (or was cancelled), with the step it happened at."""
    latest_metrics: dict[str, float] = {}
    adapter: str | None = None
    """Model name under which vLLM serves this run's latest policy."""
    run_dir: str | None = None
    evals: list[dict] = []
    """Evaluation results, oldest first: {"step", "eval/<benchmark>/<metric>": value, ...,
    and "accuracy", "format", "n" of the first benchmark (its greedy score, boxed rate, size)}."""


class RunsPublic(Public):
    runs: list[RunPublic]


class StepMetrics(Public):
    step: int
    metrics: dict[str, float]
    at: float


class MetricsPublic(Public):
    run_id: str
    steps: list[StepMetrics]


class Event(Public):
    """One server-sent event. `kind` is the SSE `event:` field; `id` the SSE `id:`."""

    id: int
    run_id: str
    kind: Literal["status", "metrics", "eval", "note"]
    step: int
    data: dict
    """status: {"status", "reason"}; metrics: the step's metrics; eval: an eval result."""
    at: float


class Health(Public):
    status: Literal["ok", "degraded"]
    generator: bool
    scheduler: bool | None = None
    """False when the scheduler thread died (queued runs would never start)."""
    active_run: str | None = None
    queued: int = 0
