"""Evaluate a run's adapter on request, through the generator that is already serving.

On a 12 GB card a second vLLM for evaluation does not fit beside the stack's (the compose
generator holds ~5.7 GiB), so an evaluation asked for over the API (`POST /runs/{id}/evals`,
`mathrl eval --run`) loads the adapter of step N into the serving vLLM under a name of its
own, runs the benchmarks through it exactly as an evaluation during a run does (`Evaluator`),
and unloads it. The scheduler runs these jobs between training steps or when no run is active.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.run.evaluate import Evaluator
from services.config import BenchmarkConfig, RunConfig


def parse_benchmark(spec: str) -> tuple[str, str | None]:
    """`NAME` or `NAME=PATH` (a local copy), as `mathrl eval --dataset` takes them."""
    name, _, path = spec.partition("=")
    return name.strip(), (path.strip() or None)


def request_config(run_cfg: RunConfig, request: dict, *, max_model_len: int) -> RunConfig:
    """The run's config with an `eval` section made of the request, held to the served
    context length: what `Evaluator` needs to render and check the request's prompts. Raises
    pydantic's ValidationError for a benchmark the eval schema refuses."""
    benchmarks = []
    for spec in request["benchmarks"]:
        name, path = parse_benchmark(spec)
        benchmarks.append(BenchmarkConfig(
            name=name, path=path, limit=request.get("limit"), samples=request.get("samples", 0),
            protocol=request.get("protocol", "mathrl"), prompt=request.get("prompt", "zero-shot"),
            fewshot_path=request.get("fewshot_path")))
    data = run_cfg.model_dump()
    data["model"]["max_model_len"] = max_model_len
    data["eval"].update(enabled=True, hold_out=False, every_n_steps=0,
                        benchmarks=[b.model_dump() for b in benchmarks])
    if request.get("max_new_tokens"):
        data["eval"]["max_new_tokens"] = request["max_new_tokens"]
    return RunConfig.model_validate(data)


def evaluate_adapter(cfg: RunConfig, tokenizer, client, pool, *, adapter: Path, name: str,
                     report_dir: Path, step: int) -> dict:
    """Load `adapter` into the serving generator as `name`, evaluate `cfg.eval` through it,
    unload it (also when the evaluation fails); returns the stored result."""
    evaluate = Evaluator(cfg, tokenizer, client, pool, report_dir=report_dir, step=lambda: step)
    client.load_adapter(name, str(adapter))
    try:
        return evaluate(name)
    finally:
        client.unload_adapter(name)
