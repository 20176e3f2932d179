"""Service verbs of the CLI: up, submit, status, cancel."""

from __future__ import annotations

import logging
import time
import tomllib
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestrator.cli.client import MathrlClient
from orchestrator.cli.errors import InvalidFile
from orchestrator.run.metrics import format_eval
from orchestrator.service.api.schemas import TERMINAL, RunPublic

console = Console()
UrlOpt = Annotated[str | None, typer.Option("--url", envvar="MATHRL_URL",
                                            help="Orchestrator API (default 127.0.0.1:8000)")]
LogLevelOpt = Annotated[Literal["warning", "info", "debug"], typer.Option(
    envvar="MATHRL_LOG_LEVEL",
    help="Console detail; debug adds HTTP request, uvicorn and Ray logs, and tracebacks")]
SHOWN = ("reward/mean", "reward/accuracy", "reward/format", "completion/mean_tokens", "loss/kl",
         "time/step")


def up(
    config: Annotated[Path | None, typer.Option(
        envvar="MATHRL_CONFIG", help="Run config defining the served stack")] = None,
    host: Annotated[str, typer.Option(envvar="MATHRL_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="MATHRL_PORT")] = 8000,
    generator_url: Annotated[str | None, typer.Option(envvar="MATHRL_GENERATOR_URL")] = None,
    ray_address: Annotated[str | None, typer.Option(envvar="MATHRL_RAY_ADDRESS")] = None,
    generators: Annotated[int | None, typer.Option(
        envvar="MATHRL_GENERATORS", min=1, max=64,
        help="vLLM replicas, placed by Ray on nodes with a `generator` resource "
             "(generator.replicas)")] = None,
    db: Annotated[Path, typer.Option(envvar="MATHRL_DB")] = Path(".mathrl/mathrl.db"),
    work_dir: Annotated[Path, typer.Option(envvar="MATHRL_WORK_DIR")] = Path(".mathrl/work"),
    log_level: LogLevelOpt = "info",
) -> None:
    """Start generator, Ray (with the learner) and the API; Ctrl-C stops them all.

    MATHRL_API_TOKEN: the bearer token the API (all but /health) and vLLM then require."""
    from orchestrator.service.server import serve
    from orchestrator.service.settings import Settings

    settings = Settings(host=host, port=port, config=config, db=db, work_dir=work_dir,
                        generator_url=generator_url, ray_address=ray_address,
                        generators=generators, log_level=log_level)
    serve(settings, on_ready=lambda: logging.getLogger("mathrl.server").info(
        "mathrl is up: API http://%s:%d  dashboard http://%s:%d/", host, port, host, port))


def _client(url: str | None) -> MathrlClient:
    return MathrlClient(url)


# Failures (unreachable API, HTTP errors, unreadable files) are turned into plain lines by
# `orchestrator.cli.errors.run_cli`, the entry point of every verb.
def submit(config: Path, url: UrlOpt = None) -> None:
    """Submit a run (TOML config) to a running orchestrator; prints the run id."""
    with open(config, "rb") as f:
        try:
            body = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise InvalidFile(f"{config} is not valid TOML: {e}") from None
    typer.echo(_client(url).submit(body).id)


def _table(runs: list[RunPublic]) -> Table:
    t = Table("id", "name", "status", "step", "reward/mean", "created")
    for r in runs:
        rm = r.latest_metrics.get("reward/mean")
        t.add_row(r.id, r.name, r.status, f"{r.step}/{r.total_steps}",
                  "" if rm is None else f"{rm:.3f}",
                  time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.created_at)))
    return t


def _summary(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k}={metrics[k]:.3g}" for k in SHOWN if k in metrics)


def follow(client: MathrlClient, run_id: str) -> RunPublic:
    """Live progress bar + latest metrics from the SSE stream, until the run ends."""
    run = client.run(run_id)
    columns = (TextColumn("[bold]{task.fields[status]}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[metrics]}"))
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("run", total=run.total_steps, completed=run.step,
                            status=run.status, metrics="")
        for ev in client.events(run_id):
            if ev.kind == "status":
                bar.update(task, status=ev.data["status"])
            elif ev.kind == "metrics":
                bar.update(task, completed=ev.step, metrics=_summary(ev.data))
            elif ev.kind == "note":  # a fault recovered from, a resume, a failed checkpoint
                bar.console.print(f"step {ev.step}: {ev.data['message']}")
            elif ev.kind == "eval":
                bar.console.print(format_eval(ev.step, ev.data), markup=False)
    return client.run(run_id)


def status(run_id: Annotated[str | None, typer.Argument()] = None,
           follow_: Annotated[bool, typer.Option("--follow", "-f")] = False,
           url: UrlOpt = None) -> None:
    """Show all runs, or one run (`--follow`: live until it ends)."""
    client = _client(url)
    if run_id is None:
        console.print(_table(client.runs()))
        return
    run = follow(client, run_id) if follow_ else client.run(run_id)
    console.print(_table([run]))
    if run.latest_metrics:
        console.print(_summary(run.latest_metrics))
    if run.error:
        console.print(f"[red]{run.error}[/red]")
    if follow_ and run.status in TERMINAL and run.status != "completed":
        raise typer.Exit(1)


def cancel(run_id: str, url: UrlOpt = None) -> None:
    """Cancel a run (a running one stops after its current step and keeps its adapter)."""
    run = _client(url).cancel(run_id)
    typer.echo(f"{run.id} {run.status}")


def resume(run_id: str, url: UrlOpt = None) -> None:
    """Continue a failed or cancelled run from its last checkpoint (it is queued again)."""
    run = _client(url).resume(run_id)
    typer.echo(f"{run.id} {run.status}")


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(submit)
    app.command()(status)
    app.command()(cancel)
    app.command()(resume)
