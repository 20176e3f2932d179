"""`mathrl` command line: the typer app, its small verbs, and the verb groups of this package
(service, demo, evals, generator, plan) registered on it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli import demo, errors, evals, generator, plan, rewards, service
from orchestrator.cli import export as export_verb

# pretty_exceptions_enable=False: failures are printed by errors.run_cli (plain lines, or the
# plain traceback with --debug), not as a full-screen rich traceback.
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="GRPO training of math-reasoning models on one GPU (or a CPU).")


@app.callback()
def _global(debug: Annotated[bool, typer.Option(
        "--debug", envvar="MATHRL_DEBUG",
        help="Show the traceback of a failure (also accepted after the verb)")] = False) -> None:
    """GRPO training of math-reasoning models on one GPU (or a CPU)."""


def _load(config: Path):
    from pydantic import ValidationError

    from services.config import load_config

    try:
        return load_config(config)
    except ValidationError as e:
        typer.echo(f"error: invalid config {config}:\n  " + "\n  ".join(
            errors.validation_lines(e.errors(include_url=False))), err=True)
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
          log_level: service.LogLevelOpt = "info",
          ) -> None:
    """Run one training run in the foreground: starts the generator and Ray, stops them after."""
    from orchestrator.run.train import train_foreground

    cfg = _load(config)
    from services.memory.check import fit_problem

    if (problem := fit_problem(cfg)) is not None:
        typer.echo(f"error: {problem[0]}: {problem[1]}", err=True)
        raise typer.Exit(2)
    from services.rewards.registry import RewardConfigError, resolve_all

    try:  # a reward function not installed, or bad options: say so before vLLM starts
        resolve_all(cfg.reward.effective_functions())
    except RewardConfigError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    base = out_dir or Path(cfg.schedule.out_dir)
    metrics = train_foreground(cfg, base, log_level=log_level)
    typer.echo(f"metrics: {metrics}")


@app.command()
def grade(file: Path,
          timeout_s: Annotated[float, typer.Option(help="Per-item limit")] = 5.0,
          workers: int = 2,
          grading: Annotated[str, typer.Option(
              help="strict: only anchored answers (\\boxed{}, '####', 'the answer is'); "
                   "lenient: else the last number in the completion")] = "strict") -> None:
    """Grade `{"completion", "gold"}` JSONL lines; writes them with `"correct"` to stdout."""
    if grading not in ("strict", "lenient"):
        raise typer.BadParameter("strict or lenient", param_hint="--grading")
    errors.require("math_verify")  # imported by the worker processes, not here
    from services.rewards import GraderPool, grade_jsonl

    with open(file) as f, GraderPool(n_workers=workers, timeout_s=timeout_s) as pool:
        n, correct = grade_jsonl(f, sys.stdout, pool, grading)  # type: ignore[arg-type]
    typer.echo(f"{correct}/{n} correct", err=True)


service.register(app)
demo.register(app)
evals.register(app)
generator.register(app)
plan.register(app)
rewards.register(app)
export_verb.register(app)


def main() -> None:
    errors.run_cli(app, sys.argv[1:])

