"""Benchmark metrics as pure functions: greedy, mean@k, maj@k and unbiased pass@k, each with
its standard error, under both gradings.

Each problem contributes one greedy verdict and, when k samples were drawn, k sample verdicts
plus the extracted answer of each sample. The answers and verdicts come from the reward's
grader (services/rewards), so a number here means exactly what the training reward means.
Every score exists twice: `strict` (only an anchored answer counts: `\\boxed{}`, `####`, "the
answer is") under its plain name, and `lenient` (else the last number of the completion, a
gain that is skill and not format) under `<metric>_lenient`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

LENIENT = "_lenient"
"""Suffix of a score under lenient grading: `greedy_lenient`, `mean@4_lenient` (its standard
error: `greedy_lenient_se`)."""

Equivalent = Callable[[str, str], bool]
"""`equivalent(a, b)`: are two extracted answers the same mathematical value (the grader)?"""


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimator (Chen et al. 2021, Codex paper): the probability that at
    least one of k samples drawn without replacement from n, of which c are correct, is
    correct: `1 - C(n - c, k) / C(n, k)`."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:  # every draw of k holds a correct sample
        return 1.0
    # The product form avoids huge binomials: prod_{i=n-c+1}^{n} (1 - k / i).
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def majority_vote(answers: Sequence[str | None], equivalent: Equivalent) -> int | None:
    """Index of the sample whose answer wins the vote, or None when no sample has an answer.

    Answers are clustered by `equivalent` (checked against each cluster's first member, in
    sample order); samples without an extractable answer (None/blank) do not vote. Ties go
    to the cluster that appeared first, as `collections.Counter.most_common` does in the
    usual maj@k scripts (e.g. Qwen2.5-Math's evaluation), so the result is deterministic.
    """
    reps: list[int] = []  # index of each cluster's first member
    votes: list[int] = []
    for i, a in enumerate(answers):
        if a is None or not a.strip():
            continue
        for j, r in enumerate(reps):
            if a.strip() == answers[r].strip() or equivalent(a, answers[r]):
                votes[j] += 1
                break
        else:
            reps.append(i)
            votes.append(1)
    if not reps:
        return None
    best = max(range(len(reps)), key=lambda j: (votes[j], -j))  # most votes, then earliest
    return reps[best]


@dataclass
class ProblemVerdicts:
    """What one problem contributes to a benchmark's summary."""

    greedy: bool | None = None
    """Greedy completion correct (None: no greedy pass)."""
    greedy_boxed: bool = False
    """The greedy completion held a complete `\\boxed{}` answer."""
    samples: list[bool] = field(default_factory=list)
    """Verdict of each of the k sampled completions."""
    majority: bool = False
    """The majority-vote answer is correct (False when no sample had an answer)."""
    greedy_lenient: bool | None = None
    """The greedy completion is correct under lenient grading (None: not graded so)."""
    samples_lenient: list[bool] | None = None
    """Lenient verdict of each sampled completion (None: not graded so)."""
    majority_lenient: bool = False
    """The majority vote over the lenient answers is correct."""


def pass_k_values(k: int) -> list[int]:
    """The pass@j reported for k samples: powers of two below k, and k itself (j > 1; the
    unbiased pass@1 is mean@k)."""
    out = [j for j in (2 ** p for p in range(1, k.bit_length())) if j < k]
    return out + ([k] if k > 1 else [])


def std_error(values: Sequence[float]) -> float:
    """Standard error of the mean of per-problem scores: sample std (n - 1) / sqrt(n); 0 for
    one problem. For 0/1 verdicts that is sqrt(p (1 - p) / (n - 1)), the usual +- of a
    benchmark accuracy; for mean@k it is over problems, k samples averaged within each."""
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0


def _sampled(per: dict[str, list[float]], k: int, samples: list[list[bool]],
             majority: list[bool], suffix: str = "") -> None:
    if any(len(s) != k for s in samples):
        raise ValueError(f"every problem needs exactly {k} sample verdicts")
    per[f"mean@{k}{suffix}"] = [sum(s) / k for s in samples]
    per[f"maj@{k}{suffix}"] = [float(m) for m in majority]
    for j in pass_k_values(k):
        per[f"pass@{j}{suffix}"] = [pass_at_k(k, sum(s), j) for s in samples]


def summarize(items: Sequence[ProblemVerdicts], k: int) -> dict[str, float]:
    """Benchmark summary: `greedy` (greedy decoding, share correct; also under its former name
    `pass@1`, kept for the metric keys runs already stored), `boxed` (greedy format rate) and,
    with k > 0 samples per problem, `mean@k`, `maj@k` and `pass@j` for `pass_k_values(k)`;
    the same scores under lenient grading as `<metric>_lenient` when the items carry lenient
    verdicts; `n` is the number of problems and `<metric>_se` the standard error of each
    score."""
    if not items:
        raise ValueError("no problems to summarize")
    out: dict[str, float] = {"n": float(len(items))}
    per: dict[str, list[float]] = {}
    greedy = [it for it in items if it.greedy is not None]
    if greedy:
        per["greedy"] = [float(it.greedy) for it in greedy]
        per["boxed"] = [float(it.greedy_boxed) for it in greedy]
        if all(it.greedy_lenient is not None for it in greedy):
            per["greedy" + LENIENT] = [float(it.greedy_lenient) for it in greedy]
    if k > 0:
        _sampled(per, k, [it.samples for it in items], [it.majority for it in items])
        if all(it.samples_lenient is not None for it in items):
            _sampled(per, k, [it.samples_lenient or [] for it in items],
                     [it.majority_lenient for it in items], LENIENT)
    for name, values in per.items():
        out[name] = statistics.fmean(values)
        out[f"{name}_se"] = std_error(values)
    if greedy:
        out["pass@1"] = out["greedy"]
    return out
