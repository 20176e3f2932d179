"""mathrl's own reward functions, registered under `mathrl.rewards` like any plugin's
(pyproject.toml), so a run names them the same way: `math`, `final-answer-line`,
`digit_share` (and `http`, in http_verifier.py)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.rewards.extract import Grading, extract_answer, normalize_gold, unevaluated
from services.rewards.final_line import final_line_correct, final_line_format
from services.rewards.scoring import combine, digit_token_share, format_reward
from services.rewards.verify import verify_answer

__all__ = ["FinalLineOptions", "MathOptions", "digit_share",
           "final_answer_line", "math_reward"]


class MathOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    format_weight: float = Field(0.1, ge=0.0, le=10.0)
    """Bonus for a complete `\\boxed{}` answer, added to the correctness score (0 or 1)."""
    grading: Grading = "strict"
    """How the answer is read: `strict` only an anchored one (last `\\boxed{}`, `####`, "the
    answer is"); `lenient` else the last number in the completion."""


def math_reward(prompt: str, completion: str, gold: str, metadata: dict[str, Any],
                options: MathOptions) -> tuple[float, dict[str, float]]:
    """Correctness of the final answer (math-verify against the gold; an expression still to
    compute, `\\boxed{27 + 82}`, is not an answer) plus a format bonus for a complete
    `\\boxed{}`. Parts: `accuracy`, `format`."""
    answer = extract_answer(completion, options.grading)
    correct = 1.0 if verify_answer(answer, gold) and not unevaluated(answer, gold) else 0.0
    fmt = format_reward(completion)
    return combine(correct, fmt, options.format_weight), {"accuracy": correct, "format": fmt}


math_reward.options = MathOptions
# In a worker process: math-verify (sympy) on model output can run for a long time.
math_reward.runs_in = "worker"


class FinalLineOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    format_weight: float = Field(0.5, ge=0.0, le=10.0)
    """Bonus for a line `#### The final answer is N` (the paper's +0.5)."""


def final_answer_line(prompt: str, completion: str, gold: str, metadata: dict[str, Any],
                      options: FinalLineOptions) -> tuple[float, dict[str, float]]:
    """The YouronMath paper's rewards: the number after the FIRST `####` equal to the gold
    as a float (within 1e-3), plus a bonus for a `#### The final answer is N` line. Parts:
    `accuracy`, `format`."""
    correct = final_line_correct(completion, normalize_gold(gold))
    fmt = final_line_format(completion)
    return combine(correct, fmt, options.format_weight), {"accuracy": correct, "format": fmt}


final_answer_line.options = FinalLineOptions
# In the orchestrator: two linear regular expressions, nothing that can hang.
final_answer_line.runs_in = "parent"


def digit_share(prompt: str, completion: str, gold: str, metadata: dict[str, Any],
                options: None, completion_tokens: list[str]) -> float:
    """Share of the completion's tokens that contain an ASCII digit: a dense toy reward that
    a random tiny model can learn (the tests use it). No options."""
    return digit_token_share(completion_tokens)


# Counting characters of token strings: cheap, so in the orchestrator, no worker needed.
digit_share.runs_in = "parent"
