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
