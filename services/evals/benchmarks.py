"""Named benchmarks (`gsm8k`, `math500`, `aime24`, `amc23`): where their problems come from,
and the two prompt formats evaluation uses.

A named benchmark loads its public Hugging Face dataset unless a local file is given (the
JSONL/JSON formats of those datasets' public copies); any other file works with named
question and answer fields. `arith` is the synthetic task of the CPU demo; the generated
skills (`services/data/skills.py`: `sum2`, `chain3`, ...) are benchmarks by their names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from services.data import (
    SKILLS,
    Problem,
    arithmetic_problems,
    distinct_skill_problems,
    load_fields,
    load_gsm8k_jsonl,
    load_hf,
    load_math,
    render_prompt,
)
from services.evals.fewshot import GSM8K_FEWSHOT, GSM8K_STOP

PromptStyle = Literal["zero-shot", "few-shot"]


@dataclass(frozen=True)
class Benchmark:
    name: str
    hf_name: str
    """Hugging Face dataset (`repo[:config]`)."""
    split: str
    question_field: str
    answer_field: str
    local_format: Literal["gsm8k", "math"]
    """How a local copy is read: GSM8K JSONL (`#### N`) or problem/answer JSON(L)."""


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("gsm8k", "openai/gsm8k:main", "test", "question", "answer", "gsm8k"),
    Benchmark("math500", "HuggingFaceH4/MATH-500", "test", "problem", "answer", "math"),
    Benchmark("aime24", "HuggingFaceH4/aime_2024", "train", "problem", "answer", "math"),
    Benchmark("amc23", "math-ai/amc23", "test", "question", "answer", "math"),
)}


def load_benchmark(name: str, path: str | Path | None = None, *, limit: int | None = None,
                   question_field: str | None = None, answer_field: str | None = None,
                   arith: dict | None = None, seed: int = 1) -> list[Problem]:
    """Problems of benchmark `name`: its local file `path` if given, else its HF dataset.

    `arith`: distinct synthetic problems drawn with `seed` (keyword arguments of
    `arithmetic_problems` in `arith`, default single-digit sums); a question asked twice
    would count twice, so repeats are dropped. A skill's name (`SKILLS`): its first `limit`
    (default 64) distinct problems drawn with `seed`. Unknown names need a `path`; with
    `question_field`/`answer_field` any JSON/JSONL file works."""
    if name == "arith":
        return _distinct_arith(limit or 64, seed, arith or {})
    if name in SKILLS and path is None:
        return distinct_skill_problems(name, limit or 64, seed=seed)
    bench = BENCHMARKS.get(name)
    if path is None:
        if bench is None:
            raise ValueError(f"unknown benchmark {name!r}: give a file, or one of "
                             f"{sorted(BENCHMARKS)}")
        return load_hf(bench.hf_name, bench.split, bench.question_field, bench.answer_field,
                       limit=limit)
    if question_field or answer_field:
        return load_fields(path, question_field or "question", answer_field or "answer",
                           limit=limit)
    fmt = bench.local_format if bench else _sniff(Path(path))
    return load_gsm8k_jsonl(path, limit=limit) if fmt == "gsm8k" else load_math(path, limit=limit)


def _sniff(path: Path) -> str:
    """GSM8K JSONL (a `question` and a `#### N` answer on the first line) or MATH-style."""
    with path.open(encoding="utf-8") as f:
        head = f.readline()
    return "gsm8k" if '"question"' in head and "####" in head else "math"


def _distinct_arith(n: int, seed: int, arith: dict) -> list[Problem]:
    kwargs = {k: arith[k] for k in ("min_operand", "max_operand", "operators") if k in arith}
    # Longer draws of one seeded stream (a draw of k is the first k of any longer one) until
    # n distinct questions, or until a 4x longer draw finds no new one: the task is exhausted.
    size, found = n, -1
    while True:
        out: dict[str, Problem] = {}
        for p in arithmetic_problems(size, seed=seed, **kwargs):
            out.setdefault(p.question, p)
            if len(out) == n:
                return list(out.values())
        if len(out) == found:
            return list(out.values())
        size, found = size * 4, len(out)


def fewshot_text(question: str) -> str:
    """The GSM8K 8-shot chain-of-thought prompt (Wei et al. 2022; lm-evaluation-harness
    `gsm8k_cot`): plain text, no chat template, answers end with "The answer is N."."""
    return GSM8K_FEWSHOT + f"Q: {question}\nA:"


def build_prompt(tokenizer, question: str, style: PromptStyle, *, instruction: str,
                 system: str | None = None) -> list[int]:
    """Prompt token ids: `zero-shot` = the chat template with the boxed instruction (the
    training prompt); `few-shot` = the GSM8K 8-shot text, tokenised as is."""
    if style == "few-shot":
        return list(tokenizer(fewshot_text(question), add_special_tokens=True)["input_ids"])
    return render_prompt(tokenizer, question, instruction=instruction, system=system)


def stop_strings(style: PromptStyle) -> list[str] | None:
    """Few-shot completions stop before the model writes the next `Q:` itself."""
    return list(GSM8K_STOP) if style == "few-shot" else None
