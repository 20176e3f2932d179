"""The YouronMath paper's GSM8K evaluation (`eval_gsm8k.py` of github shinandrew/YouronMath),
reimplemented: its 8-shot prompt, its answer reading and its comparison.

* Prompt: 8 worked solutions drawn from the GSM8K *train* split with `random.seed(42)`;
  `random.sample(list(train), 8)`, each as "Question: q\\nSolution: Let's think step by
  step. <reasoning>\\n#### The final answer is <answer>\\n\\n" (reasoning kept verbatim,
  calculator notes included), then "Question: q\\nSolution: Let's think step by step. ".
  `random.Random(42).sample` draws the same 8 as the seeded module-level `random`.
* Decoding: greedy, 512 new tokens, no stop string (the model usually goes on to write the
  next "Question:" itself; the first "#### The final answer is N" still wins).
* Answer: the first "#### The final answer is N", else the first "answer is N" /
  "final answer: N", else the LAST number of the completion; compared as floats within 0.1.

One deliberate difference: the gold is our loader's final answer ("1,600" -> 1600), where the
paper's code reads the first number of the raw text ("1,600" -> 1). 14 of the 1,319 test
answers carry a comma (docs/benchmarks.md).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

__all__ = ["PAPER_SEED", "PAPER_SHOTS", "paper_correct", "paper_eval_prefix", "paper_eval_prompt",
           "paper_extract_number"]

PAPER_SEED = 42
PAPER_SHOTS = 8

_FINAL_LINE = re.compile(r"#### The final answer is (-?\d+\.?\d*)")
_ANSWER_IS = re.compile(r"(?:answer is|final answer:?\s+)(\d+\.?\d*)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+\.?\d*")


def _example(question: str, solution: str) -> str:
    reasoning, final = (solution.split("####")[0].strip(), solution.split("####")[-1].strip()) \
        if "####" in solution else (solution.strip(), "")
    return (f"Question: {question}\nSolution: Let's think step by step. {reasoning}\n"
            f"#### The final answer is {final}\n\n")


def paper_eval_prefix(train: Sequence[tuple[str, str]], *, seed: int = PAPER_SEED,
                      shots: int = PAPER_SHOTS) -> str:
    """The 8-shot text from the train split's (question, worked solution) pairs, in file order
    (the order of the Hugging Face `openai/gsm8k` `main` train split)."""
    return "".join(_example(q, a) for q, a in random.Random(seed).sample(list(train), shots))


def paper_eval_prompt(prefix: str, question: str) -> str:
    return f"{prefix}Question: {question}\nSolution: Let's think step by step. "


def paper_extract_number(response: str) -> float | None:
    """`extract_number` of the paper: its three rules in order, as floats."""
    for pattern in (_FINAL_LINE, _ANSWER_IS):
        m = pattern.search(response)
        if m:
            return float(m.group(1))
    numbers = _NUMBER.findall(response)
    return float(numbers[-1]) if numbers else None


def paper_correct(response: str, gold: str) -> tuple[str | None, bool]:
    """(the answer read, as text; whether it is within 0.1 of the gold's first number)."""
    got = paper_extract_number(response)
    m = _NUMBER.search(gold.split("####")[-1].strip())
    want = float(m.group()) if m else None
    ok = got is not None and want is not None and abs(got - want) < 0.1
    text = None if got is None else str(int(got)) if got.is_integer() else str(got)
    return text, ok
