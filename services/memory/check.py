"""Refuse a run whose memory plan does not fit its card (`POST /runs`, `mathrl train`)."""

from __future__ import annotations

from services.config import RunConfig
from services.memory.plan import plan_run, refusal
from services.memory.shape import load_shape


def applies(cfg: RunConfig) -> bool:
    """Plans bind runs on a GPU: a card is named, or the learner is told to use CUDA. A CPU
    run (`device = "cpu"`, or `auto` with no card named) has no card to overflow."""
    named = cfg.gpu.memory_gb is not None or cfg.gpu.memory_bytes is not None
    return named or cfg.learner.device == "cuda"


def fit_problem(cfg: RunConfig, model_path: str | None = None, *,
                served: RunConfig | None = None) -> tuple[str, str] | None:
    """None when the run fits (or is not planned); else (config field to change, message).
    `served`: the config of the generator that is actually running (a service's stack): the
    run's learner is planned beside that generator on that card. A model whose config.json
    cannot be found offline is not planned here."""
    if not applies(cfg):
        return None
    try:
        shape = load_shape(model_path or cfg.model.name_or_path)
    except (FileNotFoundError, ValueError, KeyError):
        return None
    try:
        plan = plan_run(shape, cfg, served=served)
    except ValueError as e:  # the only one: a LoRA target that is no linear layer of the model
        return "lora.target_modules", str(e)
    return refusal(plan)
