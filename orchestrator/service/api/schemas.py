"""REST schemas, shared by the FastAPI routes and the CLI client (`orchestrator/cli/client.py`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# The run statuses are the store's (one vocabulary); re-exported for the routes and the client.
from orchestrator.service.store import TERMINAL, EvalJobStatus, RunStatus

__all__ = ["TERMINAL", "EvalJobPublic", "EvalJobsPublic", "EvalRequest", "Event", "Health",
           "MetricsPublic", "Public", "RunCreated", "RunPublic", "RunStatus", "RunsPublic",
           "StepMetrics"]


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
    evals: list[dict] = []
    """The run's evaluations (during the run and on request), oldest first: their
    `eval/<benchmark>/<metric>` keys also fill the CSV's row of their step."""


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


class EvalRequest(Public):
    """`POST /runs/{id}/evals`: evaluate one of the run's adapters through the serving
    generator (the same code as an evaluation during a run)."""

    benchmarks: list[str] = Field(min_length=1, max_length=16)
    """Benchmark names (`gsm8k`, `math500`, `aime24`, `amc23`: their Hugging Face test sets;
    `arith`), or `NAME=PATH` for a local copy inside the service's data folders."""
    protocol: Literal["mathrl", "paper", "qwen"] = "mathrl"
    """How prompts are written, decoded and read (as `eval.benchmarks.protocol`)."""
    limit: int | None = Field(None, ge=1)
    """The first N problems of each benchmark (None: all)."""
    samples: int = Field(0, ge=0, le=256)
    """k samples per problem for mean@k / maj@k / pass@k (0: greedy only)."""
    step: int | None = Field(None, ge=0)
    """Adapter of this step (None: the newest on disk)."""
    prompt: Literal["zero-shot", "few-shot"] = "zero-shot"
    """Prompt format of the `mathrl` protocol."""
    max_new_tokens: int | None = Field(None, ge=1, le=32768)
    """Longest completion under the `mathrl` protocol (None: the run's `eval.max_new_tokens`;
    `paper` and `qwen` fix their own)."""
    fewshot_path: str | None = None
    """GSM8K train JSONL of the `paper` protocol's 8 shots (None: `train.jsonl` beside the
    benchmark's file, else the Hugging Face train split)."""



class EvalJobPublic(Public):
    id: str
    run_id: str
    status: EvalJobStatus
    request: EvalRequest
    step: int | None = None
    """The adapter step evaluated, once known."""
    result: dict | None = None
    """`eval/<benchmark>/<metric>` scores (with `<metric>_se`), `protocol`, `accuracy` and
    `n` of the first benchmark; also added to the run's `evals`."""
    error: str | None = None
    created_at: float
    finished_at: float | None = None


class EvalJobsPublic(Public):
    evals: list[EvalJobPublic]
