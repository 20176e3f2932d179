"""Evaluation during a run, through the run's own generator and current policy: the
benchmarks of `eval.benchmarks` (greedy, and mean@k / maj@k / pass@k with samples, each under
its protocol), and the hold-out that keeps their problems out of the training set."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from orchestrator.run.rollout import build_problems
from services.config import BenchmarkConfig, EvalConfig, RunConfig
from services.data import SKILLS, Problem, load_problems
from services.evals import BenchmarkTask, load_benchmark, run_benchmark
from services.evals.protocols import (
    Protocol,
    fewshot_source,
    get_protocol,
    gsm8k_train_pairs,
    protocol_bound,
)
from services.generator.client import GeneratorClient
from services.rewards import GraderPool

log = logging.getLogger(__name__)


def benchmark_configs(ev: EvalConfig) -> list[BenchmarkConfig]:
    """`eval.benchmarks`, or the one legacy benchmark `source`/`path`/`limit` describe."""
    if ev.benchmarks:
        return list(ev.benchmarks)
    return [BenchmarkConfig(name=ev.source, path=ev.path, limit=ev.limit)]


def benchmark_problems(cfg: RunConfig, b: BenchmarkConfig) -> list[Problem]:
    if b.name == "arith" and b.path is None:
        # Draws of the run's own task (when it trains on arithmetic), with another seed.
        arith = cfg.data.arith.model_dump() if cfg.data.source == "arith" else {}
        return load_benchmark("arith", limit=b.limit, arith=arith, seed=cfg.schedule.seed + 1)
    if b.name in SKILLS and b.path is None:
        # Distinct draws of that skill with another seed than training's (`hold_out` then
        # removes any question the two draws share).
        return load_benchmark(b.name, limit=b.limit, seed=cfg.schedule.seed + 1)
    if b.name == "hf" and not cfg.eval.benchmarks:  # legacy `eval.source = "hf"`
        return load_problems("hf", path=b.path, split="test", limit=b.limit)
    return load_benchmark(b.name, b.path, limit=b.limit, question_field=b.question_field,
                          answer_field=b.answer_field)


def benchmark_protocol(b: BenchmarkConfig) -> Protocol:
    pairs = gsm8k_train_pairs(fewshot_source(b.path, b.fewshot_path)) \
        if b.protocol == "paper" else None
    return get_protocol(b.protocol, style=b.prompt, train_pairs=pairs)


def _key(question: str) -> str:
    return " ".join(question.split()).lower()


def training_problems(cfg: RunConfig) -> list[Problem]:
    """The run's training problems; with `eval.hold_out`, without any question an evaluated
    benchmark asks (compared with whitespace and case folded)."""
    if cfg.data.source == "skill":
        problems = load_problems("skill", skill=cfg.data.skill.model_dump(),
                                 seed=cfg.schedule.seed, limit=cfg.data.limit)
    else:
        problems = build_problems(cfg.data, seed=cfg.schedule.seed)
    if not (cfg.eval.enabled and cfg.eval.hold_out):
        return problems
    held = {_key(p.question) for b in benchmark_configs(cfg.eval)
            for p in benchmark_problems(cfg, b)}
    kept = [p for p in problems if _key(p.question) not in held]
    if not kept:
        raise ValueError("eval.hold_out removed every training problem: the eval benchmarks "
                         "ask all of them (use fewer eval problems or more training data)")
    if len(kept) < len(problems):
        log.info("hold-out: %d of %d training problems are eval questions; they are not "
                 "trained on", len(problems) - len(kept), len(problems))
    return kept


def benchmark_task(cfg: RunConfig, b: BenchmarkConfig, tokenizer) -> BenchmarkTask:
    """Benchmark `b` rendered for the run's model: its problems, prompts (token ids) and
    decoding. ValueError when its longest prompt + new tokens exceed `model.max_model_len`
    (vLLM would refuse those requests with a 400)."""
    ev = cfg.eval
    problems = benchmark_problems(cfg, b)
    proto = benchmark_protocol(b)
    prompts = [proto.render(tokenizer, p.question, instruction=cfg.data.instruction,
                            system=cfg.data.system_prompt) for p in problems]
    max_tokens = proto.max_tokens or ev.max_new_tokens
    longest = max((len(ids) for ids in prompts), default=0)
    if longest + max_tokens > cfg.model.max_model_len:
        raise ValueError(f"eval benchmark {b.name!r} ({b.protocol} protocol): its longest "
                         f"prompt ({longest} tokens) + {max_tokens} new tokens need "
                         f"model.max_model_len {longest + max_tokens} or more; "
                         f"{cfg.model.max_model_len} is set")
    return BenchmarkTask(name=b.name, problems=problems, prompts=prompts, samples=b.samples,
                         temperature=b.temperature, max_tokens=max_tokens, stop=proto.stop,
                         protocol=proto)


def _needs_hub(cfg: RunConfig, b: BenchmarkConfig) -> bool:
    """Its problems, or the paper protocol's 8 shots, come from the Hugging Face Hub."""
    if b.path is None:
        return b.name != "arith" and b.name not in SKILLS
    return b.protocol == "paper" and fewshot_source(b.path, b.fewshot_path) is None


def eval_length_problem(cfg: RunConfig, tokenizer) -> tuple[str, str] | None:
    """(field, message) for the first evaluation whose prompts would not fit
    `model.max_model_len`, checked at submit so that the run does not fail at its step-0
    evaluation. A protocol whose prompt length is bounded (`paper`: 2,048 + 512) fits without
    loading anything; benchmarks that need the Hub are left to the run's start."""
    explicit = bool(cfg.eval.benchmarks)
    for i, b in enumerate(benchmark_configs(cfg.eval)):
        field = f"eval.benchmarks.{i}" if explicit else "eval.max_new_tokens"
        bound = protocol_bound(b.protocol)
        if bound is not None and bound <= cfg.model.max_model_len:
            continue
        if _needs_hub(cfg, b):
            continue
        try:
            benchmark_task(cfg, b, tokenizer)
        except ValueError as e:
            return field, str(e)
        except Exception as e:  # noqa: BLE001 - an unreadable file is the request's problem
            return field, f"benchmark {b.name!r} could not be read: {type(e).__name__}: {e}"
    return None


class Evaluator:
    """Benchmarks rendered once; `__call__(model)` evaluates one served model name and returns
    the stored result: `eval/<benchmark>/<metric>` keys (strict, and lenient as
    `<metric>_lenient`), plus `accuracy` / `accuracy_lenient` / `format` / `n` of the first
    benchmark (its greedy scores, `\\boxed{}` rate and size)."""

    def __init__(self, cfg: RunConfig, tokenizer, client: GeneratorClient, pool: GraderPool,
                 *, report_dir: Path | None = None, step: Callable[[], int] | None = None):
        self.client, self.pool = client, pool
        self.report_dir, self.step = report_dir, step
        self.tasks: list[BenchmarkTask] = [benchmark_task(cfg, b, tokenizer)
                                           for b in benchmark_configs(cfg.eval)]

    def __call__(self, model: str) -> dict[str, float]:
        keep = self.report_dir is not None
        results = [run_benchmark(self.client, self.pool, model, t, keep_items=keep)
                   for t in self.tasks]
        out: dict[str, float] = {}
        first = results[0]["summary"]
        out.update(accuracy=first["greedy"], format=first["boxed"], n=first["n"])
        if "greedy_lenient" in first:
            out["accuracy_lenient"] = first["greedy_lenient"]
        for r in results:
            out.update({f"eval/{r['name']}/{k}": v for k, v in r["summary"].items()})
        if keep:
            step = self.step() if self.step else 0
            self.report_dir.mkdir(parents=True, exist_ok=True)
            path = self.report_dir / f"step-{step}.json"
            path.write_text(json.dumps({"step": step, "model": model, "benchmarks": results}))
        return out
