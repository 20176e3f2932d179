"""Synthetic integer arithmetic ("What is 3 + 5?" -> "8"): a task a tiny model can learn.

Used for smoke tests and CPU-sized runs where real math data is far beyond the model. The
draw is sequential from one ``random.Random(seed)``, so the first k of n problems are the
same as a draw of k, and the same seed always yields the same list.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from .problems import Problem

OPERATORS = ("+", "-", "*", "/")


def _fmt(x: int) -> str:
    # Negative operands get parentheses so the question stays readable and eval()-able.
    return f"({x})" if x < 0 else str(x)


def _exact_division(rng: random.Random, lo: int, hi: int) -> tuple[int, int, int]:
    """Draw ``a / b = q`` with ``a, b`` in ``[lo, hi]``, ``b != 0`` and ``q`` an integer.

    Draw the divisor, then a quotient that keeps ``a = b * q`` in range: rejection sampling of
    ``a`` would almost never hit an exact division on wide ranges. ``q`` ranges over a
    non-empty interval because ``q = 1`` (``a = b``) always fits, and ``q = 0`` when 0 is in
    range.
    """
    b = 0
    while b == 0:
        b = rng.randint(lo, hi)
    # For b > 0: ceil(lo/b) <= q <= floor(hi/b); for b < 0 the inequalities flip.
    if b > 0:
        q_lo, q_hi = -(-lo // b), hi // b
    else:
        q_lo, q_hi = -(-hi // b), lo // b
    q = rng.randint(q_lo, q_hi)
    return b * q, b, q


def arithmetic_problems(
    n: int,
    *,
    seed: int,
    min_operand: int = 0,
    max_operand: int = 9,
    operators: Sequence[str] = ("+",),
) -> list[Problem]:
    """``n`` problems ``"What is a <op> b?"`` with integer answers; ids ``arith-<seed>-<i>``.

    ``/`` only produces exact divisions (and needs a nonzero operand in range).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if min_operand > max_operand:
        raise ValueError(f"min_operand {min_operand} > max_operand {max_operand}")
    ops = tuple(operators)
    if not ops or any(op not in OPERATORS for op in ops):
        raise ValueError(f"operators must be a non-empty subset of {OPERATORS}, got {ops}")
    if "/" in ops and min_operand == max_operand == 0:
        raise ValueError("'/' needs a nonzero operand in [min_operand, max_operand]")
    rng = random.Random(seed)
    out: list[Problem] = []
    for i in range(n):
        op = rng.choice(ops)
        if op == "/":
            a, b, result = _exact_division(rng, min_operand, max_operand)
        else:
            a = rng.randint(min_operand, max_operand)
            b = rng.randint(min_operand, max_operand)
            result = a + b if op == "+" else a - b if op == "-" else a * b
        question = f"What is {_fmt(a)} {op} {_fmt(b)}?"
        out.append(Problem(id=f"arith-{seed}-{i}", question=question, answer=str(result)))
    return out
