"""Memory planning: how a run's generator and learner share one card (`mathrl plan`)."""

from services.memory.plan import GiB, MemoryPlan, Side, plan_run, refusal
from services.memory.shape import ModelShape, load_model_config, load_shape

__all__ = ["GiB", "MemoryPlan", "ModelShape", "Side", "load_model_config", "load_shape",
           "plan_run", "refusal"]
