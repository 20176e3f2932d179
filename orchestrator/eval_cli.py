"""`mathrl eval --model M [--adapter DIR] --dataset D`: greedy accuracy of a model (and
optionally a LoRA adapter) through a vLLM server launched for the purpose."""

from __future__ import annotations

import json
import socket
import statistics
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from services.data import Problem, load_gsm8k_jsonl, load_math, load_problems, render_prompt


def _vllm_rank(rank: int) -> int:
    """The smallest `--max-lora-rank` vLLM accepts that holds an adapter of this rank."""
    from services.config import VLLM_LORA_RANKS

    return min((r for r in VLLM_LORA_RANKS if r >= rank), default=VLLM_LORA_RANKS[-1])


def load_dataset(spec: str, *, limit: int | None, split: str) -> list[Problem]:
    """A file (GSM8K-style JSONL with `question`, else MATH-style problem/answer), `arith`
    (the synthetic single-digit task), or a Hugging Face dataset name (`name[:config]`)."""
    if spec == "arith":
        return load_problems("arith", limit=limit, seed=1, arith={"n": limit or 100})
    path = Path(spec)
    if path.exists():
        first = path.read_text().lstrip()[:1]
        head = path.open().readline() if first != "[" else ""
        if '"question"' in head and "####" in head:
            return load_gsm8k_jsonl(path, limit=limit)
        return load_math(path, limit=limit)
    return load_problems("hf", path=spec, split=split, limit=limit)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def eval_command(
    model: Annotated[str, typer.Option(help="Base model: hub id or local directory")],
    dataset: Annotated[str, typer.Option(help="JSONL/JSON file, `arith`, or HF dataset name")],
    adapter: Annotated[Path | None, typer.Option(help="peft LoRA adapter directory")] = None,
    limit: Annotated[int | None, typer.Option(min=1)] = 200,
    split: str = "test",
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 512,
    max_model_len: Annotated[int, typer.Option(min=64)] = 2048,
    instruction: str | None = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """Greedy accuracy and \\boxed{} rate of MODEL (+ ADAPTER) on DATASET."""
    # Heavy imports here, not at module level: they would slow every `mathrl` verb.
    from transformers import AutoTokenizer

    from orchestrator.stack import resolve_model_path
    from services.config import (
        GeneratorConfig,
        LoraConfig,
        ModelConfig,
        RolloutConfig,
        RunConfig,
    )
    from services.data import DEFAULT_INSTRUCTION
    from services.generator.client import GeneratorClient
    from services.generator.launcher import launch
    from services.rewards import GraderPool, score_math
    from services.schemas import GenerateRequest

    problems = load_dataset(dataset, limit=limit, split=split)
    model_path = resolve_model_path(model)
    rank = 16
    if adapter is not None:
        rank = json.loads((adapter / "adapter_config.json").read_text())["r"]
    gen = GeneratorConfig(port=_free_port(), max_lora_rank=_vllm_rank(max(rank, 16)))
    # A server for evaluation: the plan's flags for one request per problem in flight.
    cfg = RunConfig(model=ModelConfig(name_or_path=model, max_model_len=max_model_len),
                    lora=LoraConfig(rank=rank), generator=gen,
                    rollout=RolloutConfig(max_new_tokens=min(max_new_tokens, max_model_len - 1),
                                          prompts_per_step=max(1, min(len(problems), 256)),
                                          group_size=2))
    server = launch(cfg, model_path=model_path,
                    log_path=Path(tempfile.mkdtemp(prefix="mathrl-eval-")) / "generator.log")
    try:
        with GeneratorClient(server.url) as client, GraderPool() as pool:
            name = model_path
            if adapter is not None:
                client.load_adapter("eval-adapter", str(adapter.resolve()))
                name = "eval-adapter"
            tok = AutoTokenizer.from_pretrained(model_path)
            ins = DEFAULT_INSTRUCTION if instruction is None else instruction
            prompts = [render_prompt(tok, p.question, instruction=ins) for p in problems]
            groups = client.generate(GenerateRequest(model=name, prompts=prompts, n=1,
                                                     max_tokens=max_new_tokens, temperature=0.0))
            scores = score_math(pool, [g[0].text for g in groups], [p.answer for p in problems],
                                0.0)
    finally:
        server.stop()
    report = {"model": model, "adapter": str(adapter) if adapter else None, "dataset": dataset,
              "n": len(scores), "accuracy": statistics.fmean(s.correct for s in scores),
              "format": statistics.fmean(s.format for s in scores)}
    if json_out:
        typer.echo(json.dumps(report))
    else:
        typer.echo(f"{dataset}: accuracy {report['accuracy']:.1%}  \\boxed{{}} rate "
                   f"{report['format']:.1%}  (n={report['n']}, greedy)")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
