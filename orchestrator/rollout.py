"""Problems -> prompts -> sampled groups -> rewards: the data side of one GRPO step."""

from __future__ import annotations

from dataclasses import dataclass

from services.config import DataConfig, EvalConfig, RewardConfig
from services.data import Problem, arithmetic_problems, load_problems, render_prompt
from services.rewards import GraderPool, digit_token_share, score_math
from services.schemas import Completion


def build_problems(data: DataConfig | EvalConfig, *, seed: int) -> list[Problem]:
    if data.source == "arith":
        arith = getattr(data, "arith", None)
        if arith is None:  # eval config: a held-out draw of the default arithmetic task
            from services.config import ArithConfig

            arith = ArithConfig(n=data.limit or 64)
        probs = arithmetic_problems(arith.n, seed=seed, min_operand=arith.min_operand,
                                    max_operand=arith.max_operand, operators=tuple(arith.operators))
        return probs[: data.limit] if data.limit else probs
    kwargs = {}
    if isinstance(data, DataConfig) and data.source == "hf":
        kwargs = {"question_field": data.question_field, "answer_field": data.answer_field}
    split = getattr(data, "split", "test")
    return load_problems(data.source, path=data.path, split=split, limit=data.limit, **kwargs)


class PromptCache:
    """Renders each problem's chat prompt once (token ids are what we send to vLLM)."""

    def __init__(self, tokenizer, problems: list[Problem], *, instruction: str,
                 system: str | None):
        self.tokenizer = tokenizer
        self.problems = problems
        self.instruction = instruction
        self.system = system
        self._ids: dict[int, list[int]] = {}

    def __call__(self, i: int) -> list[int]:
        if i not in self._ids:
            self._ids[i] = render_prompt(self.tokenizer, self.problems[i].question,
                                         instruction=self.instruction, system=self.system)
        return self._ids[i]


@dataclass
class Scored:
    rewards: list[list[float]]
    """[prompts][G] scalar rewards."""
    correct: list[list[float]]
    format: list[list[float]]
    timed_out: int


class Scorer:
    """Turns sampled groups into rewards with the configured reward."""

    def __init__(self, cfg: RewardConfig, tokenizer):
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.pool = GraderPool(n_workers=cfg.num_workers, timeout_s=cfg.timeout_s) \
            if cfg.kind == "math" else None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()

    def score(self, groups: list[list[Completion]], golds: list[str]) -> Scored:
        if self.cfg.kind == "digit_share":
            rewards = [[digit_token_share(self.tokenizer.convert_ids_to_tokens(c.token_ids))
                        for c in g] for g in groups]
            zeros = [[0.0] * len(g) for g in groups]
            return Scored(rewards, zeros, zeros, 0)
        flat = [c.text for g in groups for c in g]
        flat_gold = [gold for g, gold in zip(groups, golds, strict=True) for _ in g]
        res = score_math(self.pool, flat, flat_gold, self.cfg.format_weight)
        out = Scored([], [], [], sum(int(r.timed_out) for r in res))
        i = 0
        for g in groups:
            chunk = res[i : i + len(g)]
            i += len(g)
            out.rewards.append([r.reward for r in chunk])
            out.correct.append([float(r.correct) for r in chunk])
            out.format.append([float(r.format) for r in chunk])
        return out
