"""The `eval` section of a run config: which benchmarks are measured during a run, and how."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from services.config_base import Section


class BenchmarkConfig(Section):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    """`gsm8k`, `math500`, `aime24`, `amc23` (their Hugging Face test sets unless `path` is
    given), `arith` (distinct draws of the run's synthetic task, or single-digit sums), or any
    name with a `path`. Metrics appear as `eval/<name>/<metric>`."""
    path: str | None = None
    """Local JSON/JSONL copy (the public formats of the named sets; else name the fields)."""
    question_field: str | None = None
    """Question field of a local file of another format."""
    answer_field: str | None = None
    """Answer field of a local file of another format (`#### N` answers are cut to N)."""
    limit: int | None = Field(64, ge=1)
    """Evaluate on the first N problems (None: all)."""
    samples: int = Field(0, ge=0, le=256)
    """k sampled completions per problem for `mean@k`, `maj@k` and `pass@k` (0: greedy only)."""
    temperature: float = Field(0.6, gt=0.0, le=5.0)
    """Sampling temperature of the k samples."""
    prompt: Literal["zero-shot", "few-shot"] = "zero-shot"
    """`zero-shot`: the training prompt (chat template + `data.instruction`); `few-shot`: the
    GSM8K 8-shot chain-of-thought text of Wei et al., no chat template (protocol `mathrl`)."""
    protocol: Literal["mathrl", "paper", "qwen"] = "mathrl"
    """How the benchmark is prompted, decoded and read (services/evals/protocols.py):
    `mathrl` = `prompt` + the reward's grader; `paper` = the YouronMath paper's
    `eval_gsm8k.py` (8 GSM8K train solutions drawn with seed 42, greedy, 512 tokens, last
    number as fallback); `qwen` = Qwen2.5-Math's `qwen25-math-cot` (boxed instruction as the
    system message, 2048 tokens, its parser's fallbacks). `paper` and `qwen` fix the number of
    new tokens (`eval.max_new_tokens` is then unused)."""
    fewshot_path: str | None = None
    """GSM8K train JSONL the `paper` protocol draws its 8 shots from (None: `train.jsonl` beside
    `path`, else the Hugging Face `openai/gsm8k` train split)."""


class EvalConfig(Section):
    every_n_steps: int = Field(0, ge=0, le=1_000_000)
    """Evaluate every N steps (0: only before and after training when `enabled`)."""
    enabled: bool = False
    """Evaluate at step 0, every `every_n_steps` and at the end of the run, through the running
    generator with the current policy."""
    benchmarks: list[BenchmarkConfig] = Field(default_factory=list, max_length=16)
    """Benchmarks to evaluate (`[[eval.benchmarks]]`); empty: one benchmark named after
    `source`, from `source`/`path`/`limit` below."""
    hold_out: bool = True
    """Drop from the training problems every problem whose question an evaluated benchmark
    asks, so evaluation measures problems the run never trained on."""
    source: Literal["gsm8k", "math", "hf", "arith"] = "arith"
    """Eval data source (as `data.source`)."""
    path: str | None = None
    """Eval data path (as `data.path`)."""
    limit: int | None = Field(64, ge=1)
    """Evaluate on the first N problems."""
    max_new_tokens: int = Field(256, ge=1, le=32768)
    """Longest eval completion."""

    @model_validator(mode="after")
    def _distinct_names(self) -> EvalConfig:
        names = [b.name for b in self.benchmarks]
        if len(set(names)) != len(names):
            raise ValueError(f"eval.benchmarks: names must be distinct, got {names}")
        return self
