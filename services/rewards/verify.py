"""Mathematical equivalence check of one extracted answer against one gold answer.

``verify_answer`` is meant to run inside a grader worker process's *main thread*
(``pool.py``): math-verify bounds its own parse/compare steps with ``signal.alarm``,
which only works there. The worker pool adds a hard wall-clock kill on top, for code
that a signal cannot interrupt.

``math_verify`` (and with it sympy + the ANTLR LaTeX parser, ~0.5 s to import) is
imported lazily, so that ``import services.rewards`` stays cheap in the learner process,
which only extracts answers and talks to the pool.
"""

from __future__ import annotations

import threading

from services.rewards.extract import normalize_gold

__all__ = [
    "MAX_ANSWER_CHARS",
    "MAX_BRACE_DEPTH",
    "PARSE_TIMEOUT_S",
    "VERIFY_TIMEOUT_S",
    "is_absurd",
    "verify_answer",
]

# Pre-check limits. Real final answers are short and shallow ("72", "\frac{3}{4}",
# "(1, 2]"; even a 5-level continued fraction has brace depth 6). What exceeds these
# limits is degenerate policy output, and the answer is wrong either way, so spending a
# worker's time on it buys nothing. Measured with math-verify 0.9 (no timeout):
# * ``parse`` of 3,000 plain letters takes ~1.4 s, 2,000 letters ~0.9 s (many extraction
#   regexes, then a huge sympy product); below the cap, PARSE_TIMEOUT_S bounds the cost;
# * bare nested braces ``{{...{1}...}}`` (parsed as nested sets) are exponential in the
#   depth: 0.8 s at depth 8, 2 s at 12, 6 s at 14, 27 s at 16, ~2 min at 20, so the
#   "~50" one might guess is far too lax. Depth here counts every ``{`` (cheap and
#   conservative).
MAX_ANSWER_CHARS = 2_000
MAX_BRACE_DEPTH = 12

# math-verify's own (signal.alarm, whole seconds) limits inside a worker. Legit answers
# parse and compare in milliseconds. We keep parse (x2) + compare well under the pool's
# default 5 s wall-clock limit so that slow-but-interruptible sympy work (e.g. evaluating
# 9^{9^{9^9}}: Python's big-int pow checks for signals) ends here, cheaply, with the worker
# still alive; the pool's kill + respawn is reserved for code a signal cannot stop.
PARSE_TIMEOUT_S = 1
VERIFY_TIMEOUT_S = 2


def _max_brace_depth(s: str) -> int:
    depth = deepest = 0
    for ch in s:
        if ch == "{":
            depth += 1
            if depth > deepest:
                deepest = depth
        elif ch == "}" and depth:
            depth -= 1
    return deepest


def is_absurd(s: str) -> bool:
    """Cheap rejection of inputs not worth handing to sympy (scans <= MAX_ANSWER_CHARS)."""
    return len(s) > MAX_ANSWER_CHARS or _max_brace_depth(s) > MAX_BRACE_DEPTH


def verify_answer(pred: str | None, gold: str) -> bool:
    """True iff ``pred`` (an extracted answer) is mathematically equal to ``gold``.

    Both sides go through math-verify's ``parse``: the prediction wrapped in
    ``\\boxed{}`` (it is already the box content), the gold wrapped the same way, and if
    that yields nothing as ``$gold$`` so plain numbers and LaTeX both parse. Then
    ``verify(gold, pred)`` (math-verify's comparison is deliberately asymmetric: gold
    first).

    Never raises: ``None``/empty/unparseable/absurd input, a math-verify timeout or any
    other error all count as "not correct", which is the only safe reward for them.
    """
    try:
        if pred is None:
            return False
        pred = pred.strip()
        gold = normalize_gold(gold)
        if not pred or not gold or is_absurd(pred) or is_absurd(gold):
            return False

        from math_verify import parse, verify
        from math_verify.errors import TimeoutException

        # signal.alarm raises ValueError outside the main thread; there the caller must
        # bound the time itself (GraderPool does, with processes).
        in_main = threading.current_thread() is threading.main_thread()
        parse_t = PARSE_TIMEOUT_S if in_main else None
        verify_t = VERIFY_TIMEOUT_S if in_main else None

        try:
            gold_parsed = parse("\\boxed{" + gold + "}", parsing_timeout=parse_t)
            if not gold_parsed:
                gold_parsed = parse("$" + gold + "$", parsing_timeout=parse_t)
            if not gold_parsed:
                return False
            pred_parsed = parse("\\boxed{" + pred + "}", parsing_timeout=parse_t)
            if not pred_parsed:
                return False
            return bool(verify(gold_parsed, pred_parsed, timeout_seconds=verify_t))
        except TimeoutException:  # a BaseException subclass in math-verify
            return False
    except Exception:
        return False
