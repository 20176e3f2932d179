"""Benchmarks and their metrics (greedy pass@1, mean@k, maj@k, unbiased pass@k), graded by
the same grader as the GRPO reward."""

from services.evals.benchmarks import BENCHMARKS, build_prompt, load_benchmark, stop_strings
from services.evals.metrics import (
    ProblemVerdicts,
    majority_vote,
    pass_at_k,
    pass_k_values,
    summarize,
)
from services.evals.runner import BenchmarkTask, grade_benchmark, majority_table, run_benchmark

__all__ = [
    "BENCHMARKS",
    "BenchmarkTask",
    "ProblemVerdicts",
    "build_prompt",
    "grade_benchmark",
    "load_benchmark",
    "majority_table",
    "majority_vote",
    "pass_at_k",
    "pass_k_values",
    "run_benchmark",
    "stop_strings",
    "summarize",
]
