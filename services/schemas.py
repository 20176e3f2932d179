"""Typed messages that cross process boundaries (generator <-> orchestrator <-> learner)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Completion(Wire):
    """One sampled completion, exactly as vLLM produced it (token ids, never re-tokenised)."""

    token_ids: list[int]
    logprobs: list[float]
    """Sampler log-probabilities of `token_ids` (for off-policy diagnostics)."""
    text: str
    finish_reason: str | None = None
    """`stop` (EOS or stop string) or `length` (cut at max_new_tokens)."""


class GenerateRequest(Wire):
    """G samples for each of several prompts, given as token ids."""

    model: str
    prompts: list[list[int]]
    n: int = Field(ge=1)
    max_tokens: int = Field(ge=1)
    temperature: float = Field(ge=0.0)
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] | None = None
    """Stop strings (e.g. the next `Q:` of a few-shot prompt); not part of the completion."""


class TrainSequence(Wire):
    """One prompt + completion with its group-normalised advantage."""

    prompt_ids: list[int]
    completion_ids: list[int]
    advantage: float
    sampler_logprobs: list[float] | None = None


class TrainBatch(Wire):
    step: int = Field(ge=0)
    sequences: list[TrainSequence]


class AdapterRef(Wire):
    """Where the learner wrote the weights of a policy version."""

    version: int
    path: str
    kind: str = "lora"
    """`lora`: a peft adapter directory; `merged`: a full model directory."""


class LearnResult(Wire):
    metrics: dict[str, float]
    adapter: AdapterRef
