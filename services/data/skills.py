"""Harder synthetic skills than single-digit sums: tasks SmolLM2-135M-Instruct does not have.

Single-digit sums cannot tell skill from habit: the base model already states most of them
right and only has to learn a readable answer. Each skill here is one that the base model gets
mostly wrong even when any last number in its answer counts (lenient grading), so that a gain
is arithmetic learned, not format (docs/benchmarks.md has the measured base accuracies).

Every task is a function of one `random.Random`: `skill_problems(task, n, seed=s)` draws
problem i as the i-th draw of one seeded stream, so the first k of n problems are a draw of k
and the same seed always gives the same list (ids `<task>-<seed>-<i>`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Literal

from .problems import Problem

SkillTask = Literal["sum2", "sum3", "chain3", "muladd", "shop"]
DEFAULT_SKILL: SkillTask = "sum2"

_NAMES = ("Ana", "Ben", "Eva", "Leo", "Mia", "Sam", "Tom", "Zoe")
_ITEMS = ("apples", "books", "cards", "coins", "marbles", "pencils", "shells", "stickers")


def _sum_of(lo: int, hi: int) -> Callable[[random.Random], tuple[str, int]]:
    def draw(rng: random.Random) -> tuple[str, int]:
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        return f"What is {a} + {b}?", a + b
    return draw


def _chain3(rng: random.Random) -> tuple[str, int]:
    """Three single-digit operands joined by + or -: `What is 7 + 5 - 3?`."""
    a, b, c = rng.randint(1, 9), rng.randint(1, 9), rng.randint(1, 9)
    o1, o2 = rng.choice("+-"), rng.choice("+-")
    value = a + (b if o1 == "+" else -b) + (c if o2 == "+" else -c)
    return f"What is {a} {o1} {b} {o2} {c}?", value


def _muladd(rng: random.Random) -> tuple[str, int]:
    """A product of two digits plus a number up to 20: `What is 7 * 6 + 15?`."""
    a, b, c = rng.randint(2, 9), rng.randint(2, 9), rng.randint(1, 20)
    return f"What is {a} * {b} + {c}?", a * b + c


def _shop(rng: random.Random) -> tuple[str, int]:
    """Two steps in words: a start count plus packs of a size (`a + b * c`)."""
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    a, b, c = rng.randint(5, 30), rng.randint(2, 9), rng.randint(2, 9)
    return (f"{name} has {a} {item}. {name} buys {b} packs with {c} {item} in each pack. "
            f"How many {item} does {name} have now?", a + b * c)


SKILLS: dict[str, Callable[[random.Random], tuple[str, int]]] = {
    "sum2": _sum_of(10, 99),
    "sum3": _sum_of(100, 999),
    "chain3": _chain3,
    "muladd": _muladd,
    "shop": _shop,
}
"""Task name -> one draw `(question, integer answer)` from a `random.Random`."""


def skill_problems(task: str, n: int, *, seed: int) -> list[Problem]:
    """`n` problems of skill `task`, drawn one after another from `random.Random(seed)`."""
    if task not in SKILLS:
        raise ValueError(f"unknown skill {task!r}; one of {sorted(SKILLS)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    draw = SKILLS[task]
    out = []
    for i in range(n):
        question, answer = draw(rng)
        out.append(Problem(id=f"{task}-{seed}-{i}", question=question, answer=str(answer)))
    return out


def distinct_skill_problems(task: str, n: int, *, seed: int) -> list[Problem]:
    """The first `n` distinct questions of the seeded stream (a question asked twice would
    count twice in an evaluation); fewer only when the task has fewer."""
    out: dict[str, Problem] = {}
    size, found = n, -1
    while True:
        for p in skill_problems(task, size, seed=seed):
            out.setdefault(p.question, p)
            if len(out) == n:
                return list(out.values())
        if len(out) == found:  # a 4x longer draw found nothing new: the task is exhausted
            return list(out.values())
        size, found = size * 4, len(out)
        out.clear()
