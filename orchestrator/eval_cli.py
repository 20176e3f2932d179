"""`mathrl eval --model M [--adapter DIR | --compare DIR] --dataset gsm8k,math500 [--samples K]`:
benchmarks of a model (and a LoRA adapter) through a vLLM server launched for the purpose.

One server start serves the base model and, with `--compare`, the adapter too, so both are
measured on the same problems with the same prompts. The JSON report holds the config, every
problem's prompt, completions, extracted answers and verdicts, and the summaries.
"""

from __future__ import annotations

import json
import socket
import tempfile
import time
from pathlib import Path
from typing import Annotated, Literal

import typer

from orchestrator.eval_report import load_dataset, parse_datasets, table


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def eval_command(
    model: Annotated[str, typer.Option(help="Base model: hub id or local directory")],
    dataset: Annotated[str, typer.Option(help="Comma-separated: gsm8k, math500, aime24, amc23 "
                                         "(HF), NAME=FILE, a JSON/JSONL file, arith, HF name")],
    adapter: Annotated[Path | None, typer.Option(help="Evaluate this LoRA adapter")] = None,
    compare: Annotated[Path | None, typer.Option(
        help="Evaluate the base model and this LoRA adapter in one server start")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="First N problems of each")] = 200,
    samples: Annotated[int, typer.Option(min=0, help="k samples for mean@k/maj@k/pass@k")] = 0,
    temperature: Annotated[float, typer.Option(min=0.0)] = 0.6,
    prompt: Annotated[Literal["zero-shot", "few-shot"], typer.Option(
        help="zero-shot: chat template + boxed instruction; few-shot: GSM8K 8-shot CoT")
    ] = "zero-shot",
    question_field: Annotated[str | None, typer.Option(help="Question field of a file")] = None,
    answer_field: Annotated[str | None, typer.Option(help="Answer field of a file")] = None,
    split: str = "test",
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 512,
    max_model_len: Annotated[int, typer.Option(min=64)] = 2048,
    instruction: str | None = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight at once")] = 32,
    out: Annotated[Path, typer.Option(help="Where the JSON report goes")] = Path(
        "eval-report.json"),
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON")] = False,
) -> None:
    """Greedy pass@1 (and mean@k, maj@k, pass@k with --samples) of MODEL (+ ADAPTER)."""
    if adapter is not None and compare is not None:
        raise typer.BadParameter("give --adapter or --compare, not both")
    try:
        datasets = parse_datasets(dataset)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--dataset") from e
    # Heavy imports here, not at module level: they would slow every `mathrl` verb.
    from transformers import AutoTokenizer

    from orchestrator.stack import resolve_model_path
    from services.config import (
        GeneratorConfig,
        LoraConfig,
        ModelConfig,
        RolloutConfig,
        RunConfig,
        vllm_rank_for,
    )
    from services.data import DEFAULT_INSTRUCTION
    from services.evals import BenchmarkTask, build_prompt, run_benchmark, stop_strings
    from services.generator.client import GeneratorClient
    from services.generator.launcher import launch
    from services.rewards import GraderPool

    problems = {name: load_dataset(name, path, limit=limit, split=split,
                                   question_field=question_field, answer_field=answer_field)
                for name, path in datasets}
    model_path = resolve_model_path(model)
    lora = adapter or compare
    rank = json.loads((lora / "adapter_config.json").read_text())["r"] if lora else 16
    n_max = max(len(p) for p in problems.values())
    gen = GeneratorConfig(port=_free_port(), max_lora_rank=vllm_rank_for(max(rank, 16)),
                          max_num_seqs=min(256, max(concurrency * max(samples, 1), 2)))
    cfg = RunConfig(model=ModelConfig(name_or_path=model, max_model_len=max_model_len),
                    lora=LoraConfig(rank=rank), generator=gen,
                    rollout=RolloutConfig(max_new_tokens=min(max_new_tokens, max_model_len - 1),
                                          prompts_per_step=max(1, min(n_max, 256)),
                                          group_size=max(2, samples)))
    ins = DEFAULT_INSTRUCTION if instruction is None else instruction
    t0 = time.perf_counter()
    server = launch(cfg, model_path=model_path,
                    log_path=Path(tempfile.mkdtemp(prefix="mathrl-eval-")) / "generator.log")
    models = []
    try:
        with GeneratorClient(server.url, max_parallel=concurrency) as client, \
                GraderPool() as pool:
            served = []  # (label, served name, adapter path)
            if adapter is None:
                served.append(("base", model_path, None))
            if lora is not None:
                client.load_adapter("eval-adapter", str(lora.resolve()))
                served.append(("adapter", "eval-adapter", str(lora)))
            tok = AutoTokenizer.from_pretrained(model_path)
            tasks = [BenchmarkTask(name=name, problems=probs,
                                   prompts=[build_prompt(tok, p.question, prompt, instruction=ins)
                                            for p in probs],
                                   samples=samples, temperature=temperature,
                                   max_tokens=max_new_tokens, stop=stop_strings(prompt))
                     for name, probs in problems.items()]
            for label, name, path in served:
                results = [run_benchmark(client, pool, name, t) for t in tasks]
                for t, r in zip(tasks, results, strict=True):  # the prompt as the model read it
                    for item, ids in zip(r["items"], t.prompts, strict=True):
                        item["prompt"] = tok.decode(ids)
                models.append({"label": label, "served": name, "adapter": path,
                               "benchmarks": results})
    finally:
        server.stop()
    report = {
        "config": {"model": model, "adapter": str(adapter) if adapter else None,
                   "compare": str(compare) if compare else None,
                   "datasets": [n for n, _ in datasets],
                   "sources": {n: p for n, p in datasets}, "limit": limit, "samples": samples,
                   "temperature": temperature, "prompt": prompt, "instruction": ins,
                   "max_new_tokens": max_new_tokens, "seconds": time.perf_counter() - t0},
        "models": models,
        "summary": {m["label"]: {b["name"]: b["summary"] for b in m["benchmarks"]}
                    for m in models},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    first = models[0]["benchmarks"][0]["summary"]
    line = {"model": model, "adapter": str(adapter) if adapter else None, "dataset": dataset,
            "n": int(first["n"]), "accuracy": first["pass@1"], "format": first["boxed"],
            "summary": report["summary"], "report": str(out)}
    typer.echo(json.dumps(line) if json_out else f"{table(report)}\nreport: {out}")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
