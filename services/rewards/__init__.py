"""Math rewards: answer extraction, math-verify grading in a process pool, reward shaping;
and reward functions by name (`functions.py`: the contract; `registry.py`: what is installed
under `mathrl.rewards`; `engine.py`: a run's functions over its completions; `builtins.py`,
`http_verifier.py`: mathrl's own).

Importing this package is cheap: math-verify/sympy are imported only inside grader
worker processes (or on the first direct ``verify_answer`` call).
"""

from services.rewards.extract import extract_answer, has_boxed, normalize_gold
from services.rewards.grade_file import grade_jsonl
from services.rewards.pool import GradeOutcome, GraderPool
from services.rewards.scoring import (
    RewardBreakdown,
    combine,
    digit_token_share,
    format_reward,
    score_final_answer_line,
    score_math,
)
from services.rewards.verify import verify_answer

__all__ = [
    "GradeOutcome",
    "GraderPool",
    "RewardBreakdown",
    "combine",
    "digit_token_share",
    "extract_answer",
    "format_reward",
    "grade_jsonl",
    "has_boxed",
    "normalize_gold",
    "score_final_answer_line",
    "score_math",
    "verify_answer",
]
