"""`mathrl` command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from orchestrator import cli_service, demo, eval_cli

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="GRPO training of math-reasoning models on one GPU (or a CPU).")


def _load(config: Path):
    from pydantic import ValidationError

    from services.config import load_config

    try:
        return load_config(config)
    except ValidationError as e:
        typer.echo(f"invalid config {config}:\n{e}", err=True)
        raise typer.Exit(2) from e


@app.command("make-tiny-model")
def make_tiny_model(out_dir: Path,
                    vocab_size: Annotated[int, typer.Option(min=300)] = 512,
                    seed: int = 0) -> None:
    """Build a tiny random Qwen2 model + BPE tokenizer offline (for tests and smoke runs)."""
    from services.tinymodel import build_tiny_model

    path = build_tiny_model(out_dir, vocab_size=vocab_size, seed=seed)
    typer.echo(str(path))


@app.command()
def train(config: Path,
          out_dir: Annotated[Path | None, typer.Option(help="Overrides schedule.out_dir")] = None,
          ) -> None:
    """Run one training run in the foreground: starts the generator and Ray, stops them after."""
    from orchestrator.metrics import ConsoleSink, JsonlSink
    from orchestrator.stack import Stack, prepare_run

    cfg = _load(config)
    base = out_dir or Path(cfg.schedule.out_dir)
    run_dir = base / cfg.name
    jsonl = JsonlSink(run_dir / "metrics.jsonl")
    with Stack(cfg, base / ".stack") as stack:
        handle = prepare_run(stack, cfg, run_dir,
                             sinks=[jsonl, ConsoleSink(cfg.schedule.steps)])
        try:
            handle.loop.run()
        finally:
            handle.close()
            jsonl.close()
    typer.echo(f"metrics: {jsonl.path}")


@app.command()
def grade(file: Path,
          timeout_s: Annotated[float, typer.Option(help="Per-item limit")] = 5.0,
          workers: int = 2) -> None:
    """Grade `{"completion", "gold"}` JSONL lines; writes them with `"correct"` to stdout."""
    from services.rewards import GraderPool, grade_jsonl

    with open(file) as f, GraderPool(n_workers=workers, timeout_s=timeout_s) as pool:
        n, correct = grade_jsonl(f, sys.stdout, pool)
    typer.echo(f"{correct}/{n} correct", err=True)


cli_service.register(app)
demo.register(app)
eval_cli.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
