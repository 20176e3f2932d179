"""Reward functions for GRPO.

All pure except ``score_math``, which delegates the (possibly slow, possibly hostile)
mathematical comparison to a ``GraderPool``; answer extraction stays in the caller's
process because it is linear-time string work and keeps the payload sent to workers small.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.rewards.extract import extract_answer, has_boxed, normalize_gold, unevaluated
from services.rewards.final_line import final_line_correct, final_line_format
from services.rewards.pool import GraderPool

__all__ = ["RewardBreakdown", "combine", "digit_token_share", "format_reward",
           "score_final_answer_line", "score_math"]


@dataclass(frozen=True, slots=True)
class RewardBreakdown:
    """Per-completion reward and its parts (logged separately to see *why* reward moves)."""

    reward: float
    correct: float
    format: float
    timed_out: bool = False


def format_reward(completion: str) -> float:
    """1.0 if the completion contains a complete box answer (``\\boxed{...}``, also
    ``\\fbox{...}`` / ``\\boxed 5``: the same forms the extractor accepts), else 0.0.

    A small shaping term that teaches the output convention the correctness reward
    relies on; unbalanced or empty boxes earn nothing.
    """
    return 1.0 if has_boxed(completion) else 0.0


def digit_token_share(token_texts: list[str]) -> float:
    """Share of tokens containing at least one ASCII digit (0.0 for no tokens).

    A dense, trivially learnable toy reward: lets tests check that a random tiny model's
    reward goes up under GRPO without needing it to solve any math.
    """
    if not token_texts:
        return 0.0
    hits = sum(1 for t in token_texts if any("0" <= ch <= "9" for ch in t))
    return hits / len(token_texts)


def combine(correct: float, fmt: float, format_weight: float) -> float:
    """Total reward: correctness plus a weighted format bonus."""
    return correct + format_weight * fmt


def score_math(
    grader: GraderPool, completions: list[str], golds: list[str], format_weight: float
) -> list[RewardBreakdown]:
    """Score a batch of completions against their gold answers (same order as given)."""
    if len(completions) != len(golds):
        raise ValueError(f"{len(completions)} completions but {len(golds)} golds")
    items = [
        (extract_answer(c), normalize_gold(g)) for c, g in zip(completions, golds, strict=True)
    ]
    outcomes = grader.grade(items)
    out = []
    for completion, (answer, gold), outcome in zip(completions, items, outcomes, strict=True):
        correct = 1.0 if outcome.correct and not unevaluated(answer, gold) else 0.0
        fmt = format_reward(completion)
        out.append(
            RewardBreakdown(
                reward=combine(correct, fmt, format_weight),
                correct=correct,
                format=fmt,
                timed_out=outcome.timed_out,
            )
        )
    return out


def score_final_answer_line(completions: list[str], golds: list[str],
                            format_weight: float) -> list[RewardBreakdown]:
    """The paper's rewards (`final_line.py`): first-`####` correctness plus `format_weight`
    for a `#### The final answer is N` line. Pure: no grader process involved."""
    if len(completions) != len(golds):
        raise ValueError(f"{len(completions)} completions but {len(golds)} golds")
    out = []
    for completion, gold in zip(completions, golds, strict=True):
        correct = final_line_correct(completion, normalize_gold(gold))
        fmt = final_line_format(completion)
        out.append(RewardBreakdown(reward=combine(correct, fmt, format_weight), correct=correct,
                                   format=fmt))
    return out
