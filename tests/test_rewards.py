"""Tests for services.rewards: extraction, gold normalisation, grading pool, rewards.

The pool tests start real worker processes (spawn) running real math-verify; nothing is
mocked. The whole module runs in well under a minute on 2 cores.
"""

from __future__ import annotations

import io
import json
import time

import pytest

from services.rewards import (
    GradeOutcome,
    GraderPool,
    RewardBreakdown,
    combine,
    digit_token_share,
    extract_answer,
    format_reward,
    grade_jsonl,
    has_boxed,
    normalize_gold,
    score_math,
    verify_answer,
)
from services.rewards._testing import work_fn_for_tests

# --------------------------------------------------------------------------- extraction


def test_last_box_wins():
    assert extract_answer(r"first \boxed{3}, then \boxed{\frac{1}{2}}.") == r"\frac{1}{2}"
    assert extract_answer(r"\fbox{7}") == "7"
    assert extract_answer(r"so the result is \boxed 5.") == "5"
    assert extract_answer(r"\boxed{1} and finally \boxed {2}") == "2"


def test_nested_braces():
    assert extract_answer(r"\boxed{\frac{a^{2}}{\sqrt{b}}} done") == r"\frac{a^{2}}{\sqrt{b}}"
    assert extract_answer(r"\boxed{\{1,2\}}") == r"\{1,2\}"  # escaped braces don't count


def test_gsm8k_hash_line():
    assert extract_answer("She pays 1234 dollars.\n#### 1,234\n") == "1234"
    assert extract_answer("#### 5\nsome more\n#### 6") == "6"


def test_answer_phrase():
    assert extract_answer("Adding them up. The answer is 42.") == "42"
    assert extract_answer("So the answer is $3.5$. Next question") == "3.5"
    assert extract_answer("Final Answer: **12**") == "12"


def test_no_answer_is_none():
    assert extract_answer("I have no idea.") is None
    assert extract_answer("") is None
    assert extract_answer(r"\boxed{}") is None


def test_unbalanced_braces_do_not_crash():
    assert extract_answer(r"\boxed{5} and then \boxed{6") == "5"  # previous complete box
    assert extract_answer(r"\boxed{6 oops. The answer is 6.") == "6"  # phrase fallback
    assert extract_answer("}}}{{{" + "\\boxed{" * 1000) is None
    assert extract_answer("{" * 10_000 + r"\boxed{x}" + "}" * 3) == "x"


def test_extraction_is_fast_on_100kb():
    text = "Let me think step by step. " * 4000 + r"Therefore \boxed{7}."
    assert len(text) > 100_000
    t0 = time.perf_counter()
    assert extract_answer(text) == "7"
    assert time.perf_counter() - t0 < 0.1
    # Worst case: everything unbalanced forces the one-pass fallback; still linear.
    hostile = "\\boxed{" * 15_000
    t0 = time.perf_counter()
    assert extract_answer(hostile) is None
    assert time.perf_counter() - t0 < 0.5


def test_has_boxed():
    assert has_boxed(r"x \boxed{1}")
    assert not has_boxed(r"x \boxed{1")
    assert not has_boxed("no box")


# ----------------------------------------------------------------------- normalize_gold


def test_normalize_gold():
    solution = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 1,234"
    assert normalize_gold(solution) == "1234"
    assert normalize_gold("27.0") == "27"
    assert normalize_gold(27.0) == "27"
    assert normalize_gold(72) == "72"
    assert normalize_gold(0.5) == "0.5"
    assert normalize_gold("1,000") == "1000"
    assert normalize_gold(" $18 ") == "18"
    assert normalize_gold(r"\frac34") == r"\frac34"
    assert normalize_gold(r"\frac{1}{2}") == r"\frac{1}{2}"
    assert normalize_gold("(1,2)") == "(1,2)"  # not a thousands separator


# ---------------------------------------------------------------------- grading (pool)


def test_grading_correctness(pool):
    items = [
        ("72", "72"),
        (r"\frac{1}{2}", "0.5"),
        (r"\dfrac{1}{2}", r"\frac12"),
        ("73", "72"),
        ("27", normalize_gold(27.0)),
        (None, "1"),
    ]
    got = [o.correct for o in pool.grade(items)]
    assert got == [True, True, True, False, True, False]


def test_verify_answer_direct_and_in_thread():
    # In the main thread math-verify's alarms are used; in another thread they must be
    # switched off (signal.alarm would raise there) - either way no exception escapes.
    assert verify_answer("72", "72")
    assert not verify_answer(None, "72")
    assert not verify_answer("  ", "72")
    import threading

    out = []
    th = threading.Thread(target=lambda: out.append(verify_answer(r"\frac{1}{2}", "0.5")))
    th.start()
    th.join()
    assert out == [True]


def test_hostile_inputs_are_bounded(pool):
    correct_tail = "blah " * 20_000 + r"so \boxed{7}"
    completions = [
        "\\boxed{" * 5000 + "}" * 5000,  # deep nesting
        r"\boxed{\frac{1}{2} {{{ }",  # unbalanced
        r"\boxed{9^{9^{9^9}}}",  # power tower
        "x" + "q7&^" * 3000,  # long garbage, no box -> None
        correct_tail,  # 100 KB, correct at the very end
    ]
    golds = ["1", "0.5", "1", "1", "7"]
    items = [(extract_answer(c), g) for c, g in zip(completions, golds, strict=True)]
    # Also hand the raw hostile strings straight to the workers: the pre-check must
    # reject them before sympy sees them.
    items += [(completions[0], "1"), ("{" * 40 + "1" + "}" * 40, "1"), ("a" * 5000, "1")]
    t0 = time.perf_counter()
    out = pool.grade(items)
    elapsed = time.perf_counter() - t0
    assert elapsed < 15
    assert [o.correct for o in out] == [False, False, False, False, True, False, False, False]
    assert all(isinstance(o, GradeOutcome) for o in out)


def test_timeout_kill_and_respawn():
    # timeout_s=1.0 is below math-verify's own 2 s compare alarm, so the power tower is a
    # *real* computation that the pool has to kill; __sleep__/__exit__/__raise__ come from
    # the test work function (a genuine worker code path, see services/rewards/_testing.py).
    with GraderPool(n_workers=2, timeout_s=1.0, _work_fn=work_fn_for_tests) as p:
        items = [
            (r"9^{9^{9^9}}", "1"),
            ("__sleep__", "1"),
            ("__exit__", "1"),
            ("__raise__", "1"),
            ("72", "72"),
        ]
        t0 = time.perf_counter()
        out = p.grade(items)
        assert time.perf_counter() - t0 < 20
        assert out[0] == GradeOutcome(correct=False, timed_out=True)
        assert out[1] == GradeOutcome(correct=False, timed_out=True)
        assert not out[2].correct and out[2].error and "died" in out[2].error
        assert not out[3].correct and "RuntimeError" in (out[3].error or "")
        assert out[4] == GradeOutcome(correct=True)
        assert p.respawns >= 3
        # Killed workers were replaced: the pool keeps grading normally.
        again = p.grade([("72", "72"), (r"\frac{1}{2}", "0.5"), ("1", "2")])
        assert [o.correct for o in again] == [True, True, False]
        assert not any(o.timed_out or o.error for o in again)
    # A closed pool answers with errors instead of raising.
    closed = p.grade([("1", "1")])
    assert closed[0].correct is False and closed[0].error


# ----------------------------------------------------------------------- grade_jsonl


def test_grade_jsonl_round_trip(pool):
    lines = [
        json.dumps({"id": "a", "completion": r"Thus \boxed{72}.", "gold": "72"}),
        "",
        json.dumps({"completion": "The answer is 5.", "gold": 6, "meta": {"k": 1}}),
        json.dumps({"completion": "#### 1,000", "gold": "Work...\n#### 1000"}),
    ]
    out = io.StringIO()
    n, n_correct = grade_jsonl(lines, out, pool)
    assert (n, n_correct) == (3, 2)
    rows = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [r["correct"] for r in rows] == [True, False, True]
    assert rows[0]["id"] == "a" and rows[1]["meta"] == {"k": 1}
    assert rows[1]["gold"] == 6  # input values are written back untouched


def test_grade_jsonl_invalid_line(pool):
    lines = ['{"completion": "x", "gold": "1"}', "{not json", '{"completion": 1, "gold": "1"}']
    with pytest.raises(ValueError, match="line 2"):
        grade_jsonl(lines, io.StringIO(), pool)
    with pytest.raises(ValueError, match="line 1"):
        grade_jsonl(['{"completion": "x"}'], io.StringIO(), pool)


# ----------------------------------------------------------------------------- scoring


def test_format_reward_and_combine():
    assert format_reward(r"... \boxed{3}") == 1.0
    assert format_reward(r"... \boxed{3") == 0.0
    assert format_reward("The answer is 3.") == 0.0
    assert combine(1.0, 1.0, 0.1) == pytest.approx(1.1)
    assert combine(0.0, 1.0, 0.25) == pytest.approx(0.25)


def test_digit_token_share():
    assert digit_token_share([]) == 0.0
    assert digit_token_share(["a1", "b", "22", " "]) == 0.5
    assert digit_token_share(["x", "y"]) == 0.0
    assert digit_token_share(["٣"]) == 0.0  # ASCII digits only


def test_score_math(pool):
    completions = [r"so \boxed{72}", "The answer is 5.", r"\boxed{3}", r"\boxed{4"]
    golds = ["72", "5", "4", "4"]
    got = score_math(pool, completions, golds, format_weight=0.1)
    assert all(isinstance(r, RewardBreakdown) for r in got)
    assert [r.correct for r in got] == [1.0, 1.0, 0.0, 0.0]
    assert [r.format for r in got] == [1.0, 0.0, 1.0, 0.0]
    assert [r.reward for r in got] == pytest.approx([1.1, 1.0, 0.1, 0.0])
    assert not any(r.timed_out for r in got)
    with pytest.raises(ValueError):
        score_math(pool, ["a"], [], format_weight=0.1)
