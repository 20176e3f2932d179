"""Answer forms the grader got wrong (issue 17), through the paths users take: `mathrl grade`'s
`grade_jsonl`, the GRPO reward `score_math`, and the paper's `final-answer-line` reward.

* Commas inside tuples, intervals and sets are part of the answer; only a whole answer that is
  one number with thousands separators (`1,234`) loses them.
* `#### The final answer is 72` (the YouronMath paper's format) and `#### 72` read as `72`.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from services.rewards import (
    extract_answer,
    grade_jsonl,
    normalize_gold,
    score_final_answer_line,
    score_math,
)
from services.rewards.extract import strip_thousands
from services.rewards.final_line import final_line_answer


@pytest.mark.parametrize(("raw", "want"), [
    ("1,234", "1234"), ("-1,234,567.5", "-1234567.5"), ("+12,000", "+12000"),
    ("(2,12) \\cup (12,102)", "(2,12) \\cup (12,102)"),  # MATH-500 intermediate_algebra/1981
    ("(1,234)", "(1,234)"), ("\\{1,234\\}", "\\{1,234\\}"), ("1,23", "1,23"),
    ("1,2345", "1,2345"), ("1,234 and 5,678", "1,234 and 5,678"),
])
def test_strip_thousands_only_for_a_whole_number(raw, want):
    assert strip_thousands(raw) == want


def test_gold_with_commas_survives_normalisation():
    assert normalize_gold("(2,12) \\cup (12,102)") == "(2,12) \\cup (12,102)"
    assert normalize_gold("[-2,7]") == "[-2,7]"
    assert normalize_gold("Work...\n#### 1,234") == "1234"
    assert normalize_gold("$1,000") == "1000"


@pytest.mark.parametrize(("completion", "want"), [
    ("So\n#### The final answer is 72", "72"),
    ("#### The final answer is 1,234.\n\nQuestion: next", "1234"),
    ("#### 72", "72"),
    ("#### Final answer: 5", "5"),
    ("#### $1,000", "1000"),
    ("#### (1,2)", "(1,2)"),
    ("The answer is (2,12) \\cup (12,102).", "(2,12) \\cup (12,102)"),
    ("The answer is 1,234.", "1234"),
])
def test_extraction_of_hash_and_phrase_forms(completion, want):
    assert extract_answer(completion) == want


# (completion, gold, correct): through `mathrl grade`, one JSONL line each.
CASES = [
    ("\\boxed{(2,12) \\cup (12,102)}", "(2,12) \\cup (12,102)", True),
    ("\\boxed{(2,12) \\cup (12102)}", "(2,12) \\cup (12,102)", False),
    ("The answer is $(1,2)$.", "(1,2)", True),
    ("\\boxed{(3,-1)}", "(3, -1)", True),
    ("\\boxed{\\{1,2,3\\}}", "\\{1,2,3\\}", True),
    ("\\boxed{[-2,7]}", "[-2,7]", True),
    ("\\boxed{(12,102)}", "(12102)", False),
    ("#### The final answer is 72", "72", True),
    ("#### 72", "72", True),
    ("#### The final answer is 1,234", "Work\n#### 1,234", True),
    ("#### The final answer is 71", "72", False),
]


def test_mathrl_grade_path(pool):
    lines = [json.dumps({"completion": c, "gold": g}) for c, g, _ in CASES]
    out = io.StringIO()
    n, n_correct = grade_jsonl(lines, out, pool)
    got = [json.loads(x)["correct"] for x in out.getvalue().splitlines()]
    assert got == [want for _, _, want in CASES]
    assert (n, n_correct) == (len(CASES), sum(w for _, _, w in CASES))


def test_reward_path(pool):
    res = score_math(pool, [c for c, _, _ in CASES], [g for _, g, _ in CASES], 0.0)
    assert [r.correct == 1.0 for r in res] == [w for _, _, w in CASES]


def test_paper_reward_reads_the_first_hash_line():
    completions = [
        "5 + 3 = 8\n#### The final answer is 8\n\nQuestion: more\n#### The final answer is 9",
        "8\n#### 8",                     # right number, not the paper's line: no format reward
        "#### The final answer is 9",    # the format without a leading line break: none
        "no answer at all",
        "x\n#### The final answer is 1,000",
    ]
    got = score_final_answer_line(completions, ["8", "8", "8", "8", "1000"], 0.5)
    assert [r.correct for r in got] == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert [r.format for r in got] == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert [r.reward for r in got] == [1.5, 1.0, 0.0, 0.0, 1.5]
    with pytest.raises(ValueError):
        score_final_answer_line(["a"], [], 0.5)


def test_paper_reward_is_linear_on_hostile_text():
    assert final_line_answer("#" * 200_000) is None
    assert final_line_answer(("#### x" * 20_000) + "\n#### 5") == "5"


DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not (DATA / "math500" / "test.jsonl").is_file(),
                    reason="../shared/data is not here")
def test_every_math500_gold_grades_right_against_itself(pool):
    """Each gold answer, boxed, is graded right against itself (before the comma fix one of
    the 500 could never be: `(2,12) \\cup (12,102)`)."""
    from services.data import load_math

    problems = load_math(DATA / "math500" / "test.jsonl")
    items = [(extract_answer("The answer is \\boxed{" + p.answer + "}."), normalize_gold(p.answer))
             for p in problems]
    wrong = [p.answer for p, o in zip(problems, pool.grade(items), strict=True) if not o.correct]
    assert len(problems) == 500 and wrong == []


@pytest.mark.parametrize("completion,strict,lenient", [
    ("8", None, "8"),
    ("3 + 5 = 8", None, "8"),
    ("3 + 5 = 8.", None, "8"),
    ("so 12-5", None, "5"),  # a binary minus is not a sign
    ("x = -2.5.", None, "-2.5"),
    ("that makes 1,234 apples", None, "1234"),
    ("half is 3/4", None, "3/4"),
    ("\\boxed{7} then 9", "7", "7"),  # an anchored answer wins in both modes
    ("The answer is 12. Then 13", "12", "12"),
    ("no digits", None, None),
    ("", None, None),
])
def test_lenient_grading_reads_the_last_number(completion, strict, lenient):
    assert extract_answer(completion) == strict
    assert extract_answer(completion, "strict") == strict
    assert extract_answer(completion, "lenient") == lenient


def test_lenient_extraction_is_linear_on_hostile_text():
    text = "1," * 200_000 + "x" + "9" * 100_000
    t0 = time.monotonic()
    assert extract_answer(text, "lenient") == "9" * 100_000
    assert time.monotonic() - t0 < 2.0


def test_unknown_grading_is_refused():
    with pytest.raises(ValueError, match="grading"):
        extract_answer("8", "loose")
