"""`mathrl eval --run RUN_ID`: evaluate a run's adapter through a running service.

The service loads the adapter into the generator that is already serving (on a 12 GB card a
second vLLM for evaluation does not fit), so this side only asks, waits and prints: it needs
the client alone (no torch, Ray or vLLM)."""

from __future__ import annotations

import json
import time

import typer

from orchestrator.cli.client import MathrlClient
from orchestrator.cli.eval_format import format_result
from orchestrator.service.api.schemas import EvalRequest


def eval_run(run_id: str, *, url: str | None, benchmarks: list[str], protocol: str,
             limit: int | None, samples: int, step: int | None, prompt: str,
             max_new_tokens: int | None, json_out: bool, fewshot_path: str | None = None,
             poll_s: float = 2.0, wait_s: float = 24 * 3600.0) -> None:
    """Queue the evaluation, wait for it (it runs between training steps of an active run),
    print its scores; exit 1 when it failed."""
    client = MathrlClient(url)
    job = client.request_eval(run_id, EvalRequest(
        benchmarks=benchmarks, protocol=protocol, limit=limit, samples=samples, step=step,
        prompt=prompt, max_new_tokens=max_new_tokens, fewshot_path=fewshot_path))
    if not json_out:
        typer.echo(f"evaluation {job.id} of run {run_id} queued", err=True)
    deadline = time.monotonic() + wait_s
    while job.status in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(poll_s)
        job = client.eval_job(run_id, job.id)
    if job.status != "completed":
        typer.echo(f"error: evaluation {job.id} {job.status}: {job.error or 'still not done'}",
                   err=True)
        raise typer.Exit(1)
    if json_out:
        typer.echo(json.dumps({"id": job.id, "run": run_id, "step": job.step, **job.result}))
    else:
        typer.echo(format_result(job.step, job.result))
