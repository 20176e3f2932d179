"""One benchmark through a running vLLM server: greedy and k sampled completions per problem,
graded by the reward's grader under both gradings (strict and lenient), summarised by
`services.evals.metrics`.

All prompts of a pass go out as concurrent requests (the client bounds how many are in
flight), so vLLM batches them; nothing is sent one problem at a time.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from services.data import Problem
from services.evals.metrics import ProblemVerdicts, majority_vote, summarize
from services.evals.protocols import Protocol, get_protocol
from services.generator.client import GeneratorClient
from services.rewards import GraderPool, has_boxed
from services.schemas import Completion, GenerateRequest


@dataclass
class BenchmarkTask:
    """A benchmark ready to send: its problems and their prompt token ids."""

    name: str
    problems: list[Problem]
    prompts: list[list[int]]
    samples: int = 0
    """k sampled completions per problem (0: greedy only)."""
    temperature: float = 0.6
    """Sampling temperature of the k samples."""
    max_tokens: int = 512
    greedy: bool = True
    """Also take one greedy completion per problem (`greedy`)."""
    stop: list[str] | None = None
    protocol: Protocol | None = None
    """How completions are read and graded (None: the project's grader, `mathrl`)."""


def _generate(client: GeneratorClient, model: str, task: BenchmarkTask, n: int,
              temperature: float) -> list[list[Completion]]:
    return client.generate(GenerateRequest(model=model, prompts=task.prompts, n=n,
                                           max_tokens=task.max_tokens, temperature=temperature,
                                           stop=task.stop))


def majority_table(pool: GraderPool, answers: list[list[str | None]]) -> list[int | None]:
    """The majority-vote sample index of each problem; answer equivalence is the grader's,
    with every pair of distinct answers of a problem graded in one pool call."""
    pairs: list[tuple[str, str]] = []
    for row in answers:
        distinct = list(dict.fromkeys(a.strip() for a in row if a and a.strip()))
        pairs += [(b, a) for i, a in enumerate(distinct) for b in distinct[i + 1:]]
    same = {p for p, o in zip(pairs, pool.grade(pairs), strict=True) if o.correct}
    # A later answer is checked against an earlier cluster's first member: (later, earlier).
    return [majority_vote(row, lambda a, b: (a.strip(), b.strip()) in same) for row in answers]


def run_benchmark(client: GeneratorClient, pool: GraderPool, model: str,
                  task: BenchmarkTask, *, keep_items: bool = True) -> dict:
    """`{"name", "summary", "items"?}`; `summary` as `metrics.summarize` plus `mean_tokens`
    (greedy completion length) and `seconds`. Items hold each problem's completions,
    extracted answers and verdicts."""
    t0 = time.perf_counter()
    greedy = _generate(client, model, task, 1, 0.0) if task.greedy else None
    sampled = _generate(client, model, task, task.samples, task.temperature) \
        if task.samples else None
    out = grade_benchmark(pool, task.name, task.problems, greedy, sampled,
                          keep_items=keep_items, protocol=task.protocol)
    out["summary"]["seconds"] = time.perf_counter() - t0
    return out


def grade_benchmark(pool: GraderPool, name: str, problems: list[Problem],
                    greedy: list[list[Completion]] | None,
                    sampled: list[list[Completion]] | None, *, keep_items: bool = True,
                    protocol: Protocol | None = None) -> dict:
    """Grade given completions (`greedy[i][0]`, `sampled[i][:k]` for problem i) and summarise
    them under both gradings (strict: the plain metric names; lenient: `<metric>_lenient`);
    `run_benchmark` without the generator. `protocol` reads the answers (default: the
    reward's own grader)."""
    golds = [p.answer for p in problems]
    k = len(sampled[0]) if sampled else 0
    # One grader call for every completion (by default the same grader the GRPO reward uses).
    texts: list[str] = []
    text_golds: list[str] = []
    for i, gold in enumerate(golds):
        group = ([greedy[i][0]] if greedy else []) + (sampled[i] if sampled else [])
        texts += [c.text for c in group]
        text_golds += [gold] * len(group)
    (answers, correct), (loose, loose_ok) = (protocol or get_protocol("mathrl")).grade_both(
        pool, texts, text_golds)
    boxed = [has_boxed(t) for t in texts]
    per = (1 if greedy else 0) + k

    def votes(read: list[str | None]) -> list[int | None]:
        if not k:
            return [None] * len(golds)
        return majority_table(pool, [read[i * per + per - k: (i + 1) * per]
                                     for i in range(len(golds))])

    maj, maj_loose = votes(answers), votes(loose)
    verdicts: list[ProblemVerdicts] = []
    items: list[dict] = []
    for i, p in enumerate(problems):
        base = i * per
        v = ProblemVerdicts()
        item: dict = {"id": p.id, "question": p.question, "gold": p.answer}
        if greedy:
            v.greedy, v.greedy_boxed = correct[base], boxed[base]
            v.greedy_lenient = loose_ok[base]
            item["greedy"] = {"completion": texts[base], "answer": answers[base],
                              "correct": v.greedy, "boxed": v.greedy_boxed,
                              "answer_lenient": loose[base], "correct_lenient": loose_ok[base],
                              "tokens": len(greedy[i][0].token_ids)}
        if k:
            first = base + per - k
            v.samples = [correct[first + j] for j in range(k)]
            v.samples_lenient = [loose_ok[first + j] for j in range(k)]
            w, wl = maj[i], maj_loose[i]
            v.majority = w is not None and v.samples[w]
            v.majority_lenient = wl is not None and v.samples_lenient[wl]
            item["samples"] = [{"completion": texts[first + j], "answer": answers[first + j],
                                "correct": v.samples[j], "answer_lenient": loose[first + j],
                                "correct_lenient": v.samples_lenient[j]} for j in range(k)]
            item["majority"] = {"answer": None if w is None else answers[first + w],
                                "correct": v.majority}
            item["majority_lenient"] = {"answer": None if wl is None else loose[first + wl],
                                        "correct": v.majority_lenient}
        verdicts.append(v)
        items.append(item)
    summary = summarize(verdicts, k)
    if greedy:
        summary["mean_tokens"] = statistics.fmean(len(g[0].token_ids) for g in greedy)
    out: dict = {"name": name, "summary": summary}
    if keep_items:
        out["items"] = items
    return out
