"""Math rewards: answer extraction, math-verify grading in a process pool, reward shaping.

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
