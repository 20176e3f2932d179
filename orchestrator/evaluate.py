"""Greedy evaluation through the same generator: accuracy and format rate of a policy."""

from __future__ import annotations

import statistics

from orchestrator.rollout import PromptCache, build_problems
from services.config import RunConfig
from services.generator.client import GeneratorClient
from services.rewards import GraderPool, score_math
from services.schemas import GenerateRequest


class Evaluator:
    """Held-out problems rendered once; `__call__(model)` scores one served model name."""

    def __init__(self, cfg: RunConfig, tokenizer, client: GeneratorClient, pool: GraderPool):
        ev = cfg.eval
        # A different seed from training draws a different synthetic problem list.
        problems = build_problems(ev, seed=cfg.schedule.seed + 1)
        self.prompts = PromptCache(tokenizer, problems, instruction=cfg.data.instruction,
                                   system=cfg.data.system_prompt)
        self.client = client
        self.pool = pool
        self.max_tokens = ev.max_new_tokens

    def __call__(self, model: str) -> dict[str, float]:
        problems = self.prompts.problems
        req = GenerateRequest(model=model, prompts=[self.prompts(i) for i in range(len(problems))],
                              n=1, max_tokens=self.max_tokens, temperature=0.0)
        texts = [g[0].text for g in self.client.generate(req)]
        scores = score_math(self.pool, texts, [p.answer for p in problems], 0.0)
        return {
            "accuracy": statistics.fmean(s.correct for s in scores),
            "format": statistics.fmean(s.format for s in scores),
            "n": float(len(scores)),
        }
