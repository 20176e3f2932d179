"""Benchmark metrics on hand-made vote tables, and verdicts on fixed completions through the
reward's own grader (no model involved)."""

from __future__ import annotations

import statistics
from math import comb

import pytest

from services.data import Problem
from services.evals import (
    ProblemVerdicts,
    grade_benchmark,
    majority_table,
    majority_vote,
    pass_at_k,
    pass_k_values,
    summarize,
)
from services.rewards import GraderPool
from services.schemas import Completion


def exact(a: str, b: str) -> bool:
    return a == b


@pytest.mark.parametrize(("n", "c", "k", "want"), [
    (4, 1, 2, 0.5),           # 1 - C(3,2)/C(4,2) = 1 - 3/6
    (10, 3, 1, 0.3),          # pass@1 is the share of correct samples
    (5, 0, 3, 0.0),           # all wrong
    (5, 5, 3, 1.0),           # all right
    (8, 6, 4, 1.0),           # fewer wrong samples than k: every draw holds a right one
    (16, 2, 8, 1 - comb(14, 8) / comb(16, 8)),
])
def test_unbiased_pass_at_k(n, c, k, want):
    assert pass_at_k(n, c, k) == pytest.approx(want, abs=1e-12)


def test_pass_at_k_rejects_impossible_tables():
    for n, c, k in ((4, 5, 1), (4, 1, 5), (4, 1, 0)):
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)
    assert pass_k_values(8) == [2, 4, 8] and pass_k_values(6) == [2, 4, 6]
    assert pass_k_values(1) == []


def test_majority_vote_counts_ties_and_missing_answers():
    assert majority_vote(["1", "2", "2", None], exact) == 1
    assert majority_vote(["4", "3", "3", "4"], exact) == 0  # tie: the first cluster seen
    assert majority_vote(["3", "4"], exact) == 0
    assert majority_vote([None, "9", None, " "], exact) == 1  # no-answer samples do not vote
    assert majority_vote([None, None], exact) is None
    assert majority_vote([], exact) is None
    # Equivalence, not string equality, decides the clusters.
    same = {("1/2", "0.5"), ("0.50", "0.5")}
    assert majority_vote(["3", "0.5", "3", "1/2", "0.50"],
                         lambda a, b: (a, b) in same) == 1


def test_summary_of_a_vote_table():
    items = [
        ProblemVerdicts(greedy=True, greedy_boxed=True, samples=[True, False, True, False],
                        majority=True),
        ProblemVerdicts(greedy=False, greedy_boxed=True, samples=[False, False, False, True],
                        majority=False),
        ProblemVerdicts(greedy=False, greedy_boxed=False, samples=[False] * 4, majority=False),
    ]
    s = summarize(items, 4)
    assert s["n"] == 3
    assert s["pass@1"] == pytest.approx(1 / 3) and s["boxed"] == pytest.approx(2 / 3)
    assert s["mean@4"] == pytest.approx((2 / 4 + 1 / 4 + 0) / 3)
    assert s["maj@4"] == pytest.approx(1 / 3)
    want2 = (pass_at_k(4, 2, 2) + pass_at_k(4, 1, 2) + 0.0) / 3
    assert s["pass@2"] == pytest.approx(want2) and s["pass@4"] == pytest.approx(2 / 3)
    # `greedy` is the greedy score; `pass@1` stays as its alias (stored metric keys).
    assert set(summarize(items, 0)) == {"n", "greedy", "pass@1", "boxed", "greedy_se",
                                        "boxed_se"}
    assert s["greedy"] == s["pass@1"]
    # Standard errors: sample std / sqrt(n), over problems (greedy 1,0,0: sqrt(1/3) / sqrt(3)).
    assert s["greedy_se"] == pytest.approx((1 / 3) ** 0.5 / 3 ** 0.5)
    assert s["mean@4_se"] == pytest.approx(statistics.stdev([0.5, 0.25, 0.0]) / 3 ** 0.5)
    assert summarize(items[:1], 0)["greedy_se"] == 0.0
    with pytest.raises(ValueError):
        summarize(items, 3)


def _c(text: str) -> Completion:
    return Completion(token_ids=[1] * max(1, len(text) // 4), logprobs=[0.0], text=text)


@pytest.fixture(scope="module")
def pool():
    with GraderPool(n_workers=2) as p:
        yield p


def test_majority_uses_the_graders_equivalence(pool):
    rows = [["3", "\\frac{1}{2}", "0.5"],          # 1/2 and 0.5 are one answer: 2 votes to 1
            ["7", "8"],                           # tie: the first
            [None, "5", "\\dfrac{6}{3}", "2"],    # 6/3 = 2 by value
            [None, None]]
    # By string equality alone each row would be a tie won by its first answer: [0, 0, 1, None].
    assert majority_table(pool, rows) == [1, 0, 2, None]


def test_verdicts_and_exact_scores_on_fixed_completions(pool):
    problems = [Problem(id=str(i), question=f"q{i}", answer=a)
                for i, a in enumerate(["72", "\\frac{1}{2}", "27", "5"])]
    greedy = [[_c("so 70 + 2 = \\boxed{72}")], [_c("the result: 0.5")],
              [_c("The answer is 27.")], [_c("\\boxed{6}")]]
    sampled = [
        [_c("\\boxed{72}"), _c("\\boxed{71}"), _c("\\boxed{72.0}")],        # 2 right, maj right
        [_c("\\boxed{0.5}"), _c("\\boxed{3}"), _c("\\boxed{3}")],           # maj wrong
        [_c("no idea"), _c("nothing"), _c("#### 27")],                      # maj = the one answer
        [_c("\\boxed{4}"), _c("\\boxed{6}"), _c("\\boxed{7}")],             # all wrong
    ]
    out = grade_benchmark(pool, "fixture", problems, greedy, sampled)
    s = out["summary"]
    assert s["pass@1"] == 0.5 and s["boxed"] == 0.5  # 72 and 27 right; "0.5" has no answer
    assert s["mean@3"] == pytest.approx((2 + 1 + 1 + 0) / 12)
    assert s["maj@3"] == 0.5
    assert s["pass@3"] == 0.75
    assert s["pass@2"] == pytest.approx((pass_at_k(3, 2, 2) + 2 * pass_at_k(3, 1, 2)) / 4)
    items = out["items"]
    assert [it["greedy"]["answer"] for it in items] == ["72", None, "27", "6"]
    assert [it["greedy"]["correct"] for it in items] == [True, False, True, False]
    assert items[1]["majority"] == {"answer": "3", "correct": False}
    assert items[2]["majority"] == {"answer": "27", "correct": True}
    assert [x["correct"] for x in items[0]["samples"]] == [True, False, True]


# --- strict and lenient side by side ---------------------------------------------------------


def test_summary_has_both_gradings():
    items = [
        ProblemVerdicts(greedy=False, greedy_lenient=True, samples=[False, True],
                        samples_lenient=[True, True], majority=False, majority_lenient=True),
        ProblemVerdicts(greedy=False, greedy_lenient=False, samples=[False, False],
                        samples_lenient=[True, False], majority=False, majority_lenient=True),
    ]
    s = summarize(items, 2)
    assert (s["greedy"], s["greedy_lenient"]) == (0.0, 0.5)
    assert (s["mean@2"], s["mean@2_lenient"]) == (0.25, 0.75)
    assert (s["maj@2"], s["maj@2_lenient"]) == (0.0, 1.0)
    assert s["pass@2_lenient"] == 1.0 and s["greedy_lenient_se"] == pytest.approx(0.5)
    # Items without lenient verdicts (older callers) give the strict keys only.
    plain = [ProblemVerdicts(greedy=True, samples=[True, False], majority=True)]
    assert not any(k.endswith(("_lenient", "_lenient_se")) for k in summarize(plain, 2))


def test_lenient_grading_reads_the_last_number(pool):
    problems = [Problem(id=str(i), question=f"q{i}", answer=a)
                for i, a in enumerate(["8", "12", "5"])]
    greedy = [[_c("3 + 5 = 8")], [_c("The answer is 12.")], [_c("\\boxed{}")]]
    sampled = [[_c("8"), _c("it is 9"), _c("so 4 + 4 = 8")],
               [_c("\\boxed{12}"), _c("\\boxed{13} or 12"), _c("12")],
               [_c("5 is wrong, \\boxed{6}"), _c("none"), _c("five")]]
    out = grade_benchmark(pool, "forms", problems, greedy, sampled)
    s, items = out["summary"], out["items"]
    assert (s["greedy"], s["greedy_lenient"]) == pytest.approx((1 / 3, 2 / 3))
    assert s["mean@3"] == pytest.approx(1 / 9) and s["mean@3_lenient"] == pytest.approx(4 / 9)
    assert (s["maj@3"], s["maj@3_lenient"]) == pytest.approx((1 / 3, 2 / 3))
    assert [it["greedy"]["answer"] for it in items] == [None, "12", None]
    assert [it["greedy"]["answer_lenient"] for it in items] == ["8", "12", None]
    assert items[0]["majority_lenient"] == {"answer": "8", "correct": True}
    # A box outranks any number: "5 is wrong, \boxed{6}" stays wrong under both.
    assert [x["correct_lenient"] for x in items[2]["samples"]] == [False, False, False]


def test_protocols_grade_both_ways(pool):
    from services.evals.protocols import get_protocol

    texts, golds = ["7 + 1 = 8", "\\boxed{8}", "nothing"], ["8"] * 3
    (a, ok), (la, lok) = get_protocol("mathrl").grade_both(pool, texts, golds)
    assert (a, ok, la, lok) == ([None, "8", None], [False, True, False],
                                ["8", "8", None], [True, True, False])
    assert get_protocol("mathrl").grade(pool, texts, golds, "lenient") == (la, lok)
    # The qwen protocol reads the last number already: lenient is its strict reading.
    strict, lenient = get_protocol("qwen").grade_both(pool, texts, golds)
    assert strict == lenient and strict[1][:2] == [True, True]
    with pytest.raises(ValueError):
        get_protocol("mathrl").grade(pool, texts, golds, "loose")


def test_reports_put_lenient_beside_strict_and_se_beside_values():
    from orchestrator.cli.demo import cell, held_out_rows
    from orchestrator.cli.eval_format import LENIENT, format_result, score
    from orchestrator.cli.eval_report import table
    from services.evals.metrics import LENIENT as METRICS_LENIENT

    assert LENIENT == METRICS_LENIENT  # the client-side copy of the suffix
    assert score(0.8333, 0.068) == "83.3% ± 6.8" and score(None) == "-"
    summary = {"n": 30.0, "greedy": 0.1, "greedy_se": 0.05, "greedy_lenient": 0.6,
               "greedy_lenient_se": 0.09, "pass@1": 0.1, "boxed": 0.0, "boxed_se": 0.0,
               "mean@4": 0.2, "mean@4_se": 0.03, "mean@4_lenient": 0.5,
               "mean@4_lenient_se": 0.04, "mean_tokens": 12.0}
    report = {"config": {"datasets": ["sum2"]},
              "models": [{"label": "base", "benchmarks": [{"name": "sum2", "summary": summary}]}]}
    text = table(report)
    head, greedy = text.splitlines()[0], next(x for x in text.splitlines() if " greedy " in x)
    assert "base strict" in head and "base lenient" in head
    assert "10.0% ± 5.0" in greedy and "60.0% ± 9.0" in greedy
    assert greedy.index("10.0%") < greedy.index("60.0%")  # strict, then lenient beside it
    assert "_lenient" not in text and "_se" not in text and "pass@1" not in text

    result = {f"eval/sum2/{k}": v for k, v in summary.items()}
    line = format_result(6, result)
    assert "greedy strict 10.0% ± 5.0, lenient 60.0% ± 9.0" in line
    assert "mean@4 strict 20.0% ± 3.0, lenient 50.0% ± 4.0" in line and "(n=30)" in line
    # The demo: one row per score (no `_se` or `_lenient` rows), both gradings in its cells.
    rows = held_out_rows(result)
    assert [k for _, k in rows] == ["eval/sum2/greedy", "eval/sum2/mean@4", "eval/sum2/boxed"]
    assert cell(result, "eval/sum2/greedy_lenient") == "60.0% ± 9.0"
    assert cell(result, "eval/sum2/boxed_lenient") == "-"


def test_an_answer_must_be_a_value_not_the_question(pool):
    """math-verify evaluates what it parses: `\\boxed{27 + 82}` "equals" 109. A policy trained
    on two-digit sums learned to copy the question into the box; evaluation counts it wrong."""
    from services.evals.protocols import get_protocol, unevaluated

    for answer, gold in (("27 + 82", "109"), ("3 \\times 4", "12"), ("2^{3}", "8"),
                         ("{27}+{82}", "109"), ("12 - 3", "9")):
        assert unevaluated(answer, gold), answer
    for answer, gold in (("109", "109"), ("-5", "-5"), ("\\frac{1}{2}", "0.5"),
                         ("1,234", "1234"), ("1e-5", "0.00001"), ("27+82", "x+1"), (None, "3")):
        assert not unevaluated(answer, gold), answer
    texts = ["\\boxed{27 + 82}", "27 + 82 = 109", "#### 27 + 82", "\\boxed{109}"]
    (_, ok), (_, lok) = get_protocol("mathrl").grade_both(pool, texts, ["109"] * 4)
    assert ok == [False, False, False, True] and lok == [False, True, False, True]


def test_the_console_line_puts_lenient_beside_strict():
    """The demo's and the service's `eval at step N` line: each score strict with its standard
    error, its lenient twin beside it (never a score of its own), `pass@1` not repeated."""
    from orchestrator.run.metrics import format_eval

    m = {"greedy": 0.01, "greedy_se": 0.007, "greedy_lenient": 0.105, "greedy_lenient_se": 0.022,
         "pass@1": 0.01, "boxed": 0.0, "mean@4": 0.009, "mean@4_lenient": 0.044, "n": 200}
    line = format_eval(0, {f"eval/sum2/{k}": v for k, v in m.items()})
    assert line == ("eval at step 0: sum2 greedy 1.0% ± 0.7% (lenient 10.5% ± 2.2%) boxed 0.0% "
                    "mean@4 0.9% (lenient 4.4%) (n=200)")
