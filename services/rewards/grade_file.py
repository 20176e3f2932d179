"""Offline grading of a JSONL file of completions (backs ``mathrl grade FILE.jsonl``)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, TextIO

from services.rewards.extract import Grading, extract_answer, normalize_gold, unevaluated
from services.rewards.pool import GraderPool

__all__ = ["grade_jsonl"]

# Lines are graded in chunks: big enough to keep every worker busy, small enough that a
# file of 100 KB completions is never held in memory whole.
_CHUNK = 256


def _parse_line(line: str, lineno: int) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"line {lineno}: invalid JSON ({exc.msg})") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"line {lineno}: expected a JSON object")
    if not isinstance(obj.get("completion"), str):
        raise ValueError(f'line {lineno}: "completion" must be a string')
    gold = obj.get("gold")
    if isinstance(gold, bool) or not isinstance(gold, str | int | float):
        raise ValueError(f'line {lineno}: "gold" must be a string or a number')
    return obj


def grade_jsonl(lines: Iterable[str], out: TextIO, grader: GraderPool,
                grading: Grading = "strict") -> tuple[int, int]:
    """Read ``{"completion": str, "gold": str | number, ...}`` lines, write each object
    back (other keys preserved, same order) with ``"correct": bool`` added. ``grading``
    is how answers are read (``extract_answer``).

    Blank lines are skipped; line numbers in errors count them (they are 1-based
    physical line numbers of the input). An invalid line raises ``ValueError``; since
    input is streamed in chunks, earlier chunks may already have been written.
    Returns ``(n_graded_lines, n_correct)``.
    """
    n_lines = n_correct = 0
    chunk: list[dict[str, Any]] = []

    def flush() -> None:
        nonlocal n_lines, n_correct
        items = [(extract_answer(o["completion"], grading), normalize_gold(o["gold"]))
                 for o in chunk]
        for obj, (answer, gold), outcome in zip(chunk, items, grader.grade(items), strict=True):
            obj["correct"] = outcome.correct and not unevaluated(answer, gold)
            out.write(json.dumps(obj, ensure_ascii=False) + "\n")
            n_lines += 1
            n_correct += obj["correct"]
        chunk.clear()

    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        chunk.append(_parse_line(line, lineno))
        if len(chunk) >= _CHUNK:
            flush()
    if chunk:
        flush()
    return n_lines, n_correct
