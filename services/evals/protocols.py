"""Evaluation protocols by name: how a benchmark is prompted, decoded and read.

* `mathrl`: the project's own (`zero-shot` chat template + boxed instruction, the training
  prompt; or `few-shot`, the lm-evaluation-harness GSM8K 8-shot text), read by the reward's
  grader (`services/rewards`: last `\\boxed{}`, `####`, "the answer is" + math-verify).
* `paper`: the YouronMath paper's `eval_gsm8k.py` (services/evals/paper.py): 8 random GSM8K
  train solutions (seed 42), greedy, 512 tokens, last-number fallback, float comparison.
* `qwen`: Qwen2.5-Math's `qwen25-math-cot` evaluation (services/evals/qwen.py): boxed
  instruction as the system message, the bare question, 2048 tokens, its parser's fallbacks,
  math-verify for the equivalence.

A protocol fixes what a published figure depends on; numbers are comparable only within one.

Each protocol reads answers under two gradings (services/rewards/extract.py): `strict` and
`lenient`. Under `mathrl`, strict counts only anchored answers and lenient also the last number
of a completion that has none. `paper` and `qwen` read the last number already (their own
fallbacks), so their lenient verdicts are their strict ones.

Under `mathrl` an answer must also be a value when the gold is a number: math-verify evaluates
what it parses, so `\\boxed{27 + 82}` equals 109, and a policy trained on two-digit sums with the
`math` reward learned to copy the question into the box (100% "correct" after 12 steps, no
sum computed; docs/benchmarks.md). An answer that still holds an operation between two numbers
(`+`, `-`, `*`, `^`, `\\times`, `\\cdot`, `\\div`; not `/`, a fraction is a value) is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from services.evals.benchmarks import PromptStyle, build_prompt, stop_strings
from services.evals.paper import paper_correct, paper_eval_prefix, paper_eval_prompt
from services.evals.qwen import QWEN_MAX_TOKENS, QWEN_STOP, qwen_extract, qwen_prompt
from services.rewards import GraderPool, extract_answer, normalize_gold
from services.rewards.extract import GRADINGS, Grading, extract_last_number, unevaluated

ProtocolName = Literal["mathrl", "paper", "qwen"]
PROTOCOLS: tuple[str, ...] = ("mathrl", "paper", "qwen")
PAPER_MAX_TOKENS = 512
PAPER_MAX_PROMPT_TOKENS = 2048
"""The paper tokenises its prompts with `truncation=True, max_length=2048`."""


@dataclass(frozen=True)
class Protocol:
    name: str
    max_tokens: int | None
    """New tokens the protocol decodes (None: the caller's setting)."""
    stop: list[str] | None
    text: Callable[[str], str] | None
    """question -> the whole prompt text (plain-text protocols); None: the project's prompt."""
    style: PromptStyle = "zero-shot"
    """The project's prompt format (`mathrl` only)."""
    max_prompt_tokens: int | None = None
    """Keep the FIRST N prompt tokens (the paper tokenises with `truncation=True,
    max_length=2048`, which cuts the end); None: whole prompts."""

    def render(self, tokenizer, question: str, *, instruction: str,
               system: str | None = None) -> list[int]:
        """Prompt token ids of `question` under this protocol."""
        if self.text is None:
            return build_prompt(tokenizer, question, self.style, instruction=instruction,
                                system=system)
        ids = list(tokenizer(self.text(question), add_special_tokens=True)["input_ids"])
        return ids[: self.max_prompt_tokens] if self.max_prompt_tokens else ids

    def grade(self, pool: GraderPool, texts: Sequence[str], golds: Sequence[str],
              grading: Grading = "strict") -> tuple[list[str | None], list[bool]]:
        """(the answer each completion gives, as this protocol reads it under `grading`;
        whether it is right)."""
        if grading not in GRADINGS:
            raise ValueError(f"grading must be one of {GRADINGS}, got {grading!r}")
        if self.name == "paper":  # numbers within 0.1: no symbolic grader involved
            read = [paper_correct(t, g) for t, g in zip(texts, golds, strict=True)]
            return [a for a, _ in read], [ok for _, ok in read]
        if self.name == "qwen":  # Qwen2.5-Math's own evaluation, as published
            answers = [qwen_extract(t) for t in texts]
            return answers, _verdicts(pool, answers, golds)
        answers = [extract_answer(t, grading) for t in texts]
        return answers, _verdicts(pool, answers, golds, values=True)

    def grade_both(self, pool: GraderPool, texts: Sequence[str], golds: Sequence[str]
                   ) -> tuple[tuple[list[str | None], list[bool]],
                              tuple[list[str | None], list[bool]]]:
        """`grade` under `strict` and under `lenient`; a completion whose lenient answer is its
        strict one is graded once."""
        answers, ok = self.grade(pool, texts, golds, "strict")
        if self.name != "mathrl":  # their own reading falls back to the last number already
            return (answers, ok), (list(answers), list(ok))
        loose = [a if a is not None else extract_last_number(t)
                 for a, t in zip(answers, texts, strict=True)]
        redo = [i for i, (a, b) in enumerate(zip(answers, loose, strict=True)) if a != b]
        loose_ok = list(ok)
        for i, v in zip(redo, _verdicts(pool, [loose[i] for i in redo],
                                        [golds[i] for i in redo], values=True), strict=True):
            loose_ok[i] = v
        return (answers, ok), (loose, loose_ok)


def _verdicts(pool: GraderPool, answers: Sequence[str | None], golds: Sequence[str],
              *, values: bool = False) -> list[bool]:
    """math-verify's verdicts; `values`: an unevaluated expression is wrong (see above)."""
    if not answers:
        return []
    outcomes = pool.grade([(a, normalize_gold(g)) for a, g in zip(answers, golds, strict=True)])
    return [o.correct and not (values and unevaluated(a, g))
            for o, a, g in zip(outcomes, answers, golds, strict=True)]


def gsm8k_train_pairs(source: str | Path | None) -> list[tuple[str, str]]:
    """(question, worked solution) of the GSM8K train split in file order: a JSONL file in
    openai/grade-school-math's format, or (None) the Hugging Face `openai/gsm8k` `main` set."""
    if source is not None:
        with Path(source).open(encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    else:
        import datasets  # lazy: optional and slow to import

        rows = list(datasets.load_dataset("openai/gsm8k", "main", split="train"))
    return [(r["question"], r["answer"]) for r in rows]


def fewshot_source(path: str | None, fewshot_path: str | None) -> str | None:
    """Where the `paper` protocol's GSM8K train solutions come from: `fewshot_path`, else a
    `train.jsonl` beside the benchmark's file, else (None) the Hugging Face train split."""
    if fewshot_path:
        return fewshot_path
    if path:
        beside = Path(path).with_name("train.jsonl")
        if beside.is_file():
            return str(beside)
    return None


def protocol_bound(name: str) -> int | None:
    """Most tokens a request of protocol `name` can take (prompt + new tokens) whatever its
    problems, when the protocol caps both; None when it depends on the data."""
    return PAPER_MAX_PROMPT_TOKENS + PAPER_MAX_TOKENS if name == "paper" else None


def get_protocol(name: str, *, style: PromptStyle = "zero-shot",
                 train_pairs: Sequence[tuple[str, str]] | None = None) -> Protocol:
    """The protocol `name`; `paper` needs the GSM8K train pairs its 8 shots come from."""
    if name == "mathrl":
        return Protocol("mathrl", None, stop_strings(style), None, style)
    if name == "paper":
        if not train_pairs:
            raise ValueError("protocol 'paper' needs the GSM8K train split (its 8 shots)")
        prefix = paper_eval_prefix(train_pairs)
        return Protocol("paper", PAPER_MAX_TOKENS, None,
                        lambda q: paper_eval_prompt(prefix, q),
                        max_prompt_tokens=PAPER_MAX_PROMPT_TOKENS)
    if name == "qwen":
        return Protocol("qwen", QWEN_MAX_TOKENS, list(QWEN_STOP), qwen_prompt)
    raise ValueError(f"unknown protocol {name!r}: one of {', '.join(PROTOCOLS)}")
