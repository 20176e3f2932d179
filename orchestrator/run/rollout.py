"""Problems -> prompts -> sampled groups -> rewards: the data side of one GRPO step."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

from orchestrator.run.groups import informative_groups, is_informative, request_seed
from services.config import DataConfig, EvalConfig, RewardConfig, RunConfig
from services.data import (
    Problem,
    PromptSampler,
    arithmetic_problems,
    load_problems,
    render_prompt,
)
from services.data.paper_prompt import left_truncate, paper_train_prefix, paper_train_prompt
from services.generator.client import GeneratorClient
from services.rewards import GraderPool
from services.rewards.engine import RewardEngine, Sample
from services.rewards.registry import resolve_all
from services.schemas import Completion, GenerateRequest


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
    """Renders each problem's prompt once (token ids are what we send to vLLM): the chat
    template, or the paper's "Question/Solution" text after `fewshot_prefix`; then only the
    last `max_tokens` ids are kept (None: all)."""

    def __init__(self, tokenizer, problems: list[Problem], *, instruction: str,
                 system: str | None, template: str = "chat", fewshot_prefix: str = "",
                 max_tokens: int | None = None):
        self.tokenizer = tokenizer
        self.problems = problems
        self.instruction = instruction
        self.system = system
        self.template, self.prefix, self.max_tokens = template, fewshot_prefix, max_tokens
        self._ids: dict[int, list[int]] = {}

    @classmethod
    def from_config(cls, tokenizer, problems: list[Problem], data: DataConfig, *,
                    seed: int) -> PromptCache:
        # The exemplars are drawn once: every prompt of the run shows the same ones.
        prefix = paper_train_prefix(data.fewshot, seed) if data.fewshot else ""
        return cls(tokenizer, problems, instruction=data.instruction, system=data.system_prompt,
                   template=data.template, fewshot_prefix=prefix,
                   max_tokens=data.max_prompt_tokens)

    def _render(self, question: str) -> list[int]:
        if self.template == "question-solution":
            # TRL tokenises the prompt text without special tokens; so do we.
            text = paper_train_prompt(self.prefix, question)
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return render_prompt(self.tokenizer, question, instruction=self.instruction,
                             system=self.system)

    def __call__(self, i: int) -> list[int]:
        if i not in self._ids:
            ids = self._render(self.problems[i].question)
            self._ids[i] = left_truncate(ids, self.max_tokens)
        return self._ids[i]


@dataclass
class Scored:
    rewards: list[list[float]]
    """[prompts][G] scalar rewards."""
    correct: list[list[float]]
    """[prompts][G] the `accuracy` part of the reward's functions (0 where none gives one)."""
    format: list[list[float]]
    """[prompts][G] the `format` part (0 where none gives one)."""
    timed_out: int
    errors: int = 0
    """Reward-function calls that raised or returned no score (their completions scored 0)."""
    sums: dict[str, float] = field(default_factory=dict)
    """Sum over completions of each function's score and each part (`reward/<key>`)."""
    count: int = 0
    """Completions scored (what `sums` is divided by)."""

    def extend(self, other: Scored) -> None:
        self.rewards += other.rewards
        self.correct += other.correct
        self.format += other.format
        self.timed_out += other.timed_out
        self.errors += other.errors
        for k, v in other.sums.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += other.count


class Scorer:
    """Turns sampled groups into rewards with the run's reward functions (`reward.functions`,
    or the built-in `reward.kind` stands for); see services/rewards/engine.py."""

    def __init__(self, cfg: RewardConfig, tokenizer):
        self.cfg = cfg
        self.tokenizer = tokenizer
        functions = resolve_all(cfg.effective_functions())  # RewardConfigError names the field
        self.engine = RewardEngine(functions, timeout_s=cfg.timeout_s,
                                   num_workers=cfg.num_workers)

    @property
    def pool(self) -> GraderPool | None:
        return self.engine.pool

    def close(self) -> None:
        self.engine.close()

    def take_notes(self) -> list[str]:
        """Run notes (a reward function's first failure) since the last call."""
        return self.engine.take_notes()

    def score(self, groups: list[list[Completion]], golds: list[str],
              problems: list[Problem] | None = None) -> Scored:
        """Rewards of `groups` (one per prompt) against their golds; `problems` (same order)
        give the functions the question and the row's metadata."""
        samples = []
        for k, (g, gold) in enumerate(zip(groups, golds, strict=True)):
            p = problems[k] if problems is not None else None
            for c in g:
                tokens = (self.tokenizer.convert_ids_to_tokens(c.token_ids)
                          if self.engine.tokens else None)
                samples.append(Sample(prompt=p.question if p else "", completion=c.text,
                                      gold=gold, metadata=dict(p.metadata) if p else {},
                                      completion_tokens=tokens))
        res = self.engine.score(samples)
        zeros = [0.0] * len(samples)
        correct, fmt = res.metrics.get("accuracy", zeros), res.metrics.get("format", zeros)
        out = Scored([], [], [], res.timeouts, res.errors,
                     {k: sum(v) for k, v in res.metrics.items()}, len(samples))
        i = 0
        for g in groups:
            out.rewards.append(res.totals[i : i + len(g)])
            out.correct.append(correct[i : i + len(g)])
            out.format.append(fmt[i : i + len(g)])
            i += len(g)
        return out


@dataclass
class Rollout:
    """The scored groups of one step, all sampling rounds together, before the learner.

    Every list is over the sampled groups in sampling order; `kept` says which of them train
    (all of them unless dynamic sampling dropped some)."""

    version: int
    """Policy version that sampled it (the step's own version on-policy, one less when it
    was sampled ahead while the learner trained the previous step)."""
    prompts: list[int] = field(default_factory=list)
    """Problem indices, as drawn from the sampler."""
    prompt_ids: list[list[int]] = field(default_factory=list)
    groups: list[list[Completion]] = field(default_factory=list)
    scored: Scored = field(default_factory=lambda: Scored([], [], [], 0))
    kept: list[int] = field(default_factory=list)
    rounds: int = 0
    sampler_state: dict = field(default_factory=dict)
    """The prompt sampler right after this rollout's draws: what a checkpoint taken after its
    step records, so that a restore draws the next step's prompts again."""
    t_generate: float = 0.0
    t_reward: float = 0.0


class RolloutCollector:
    """Draws prompts, samples G completions each from the served policy, scores them and, with
    `rollout.dynamic_sampling`, samples more prompts until `prompts_per_step` groups whose
    rewards differ are in hand or `max_sampling_rounds` is spent."""

    def __init__(self, cfg: RunConfig, client: GeneratorClient, prompts: PromptCache,
                 scorer: Scorer):
        self.cfg, self.client, self.prompts, self.scorer = cfg, client, prompts, scorer

    def collect(self, sampler: PromptSampler, *, step: int, model: str, version: int
                ) -> Rollout:
        ro = self.cfg.rollout
        want = ro.prompts_per_step
        max_rounds = ro.max_sampling_rounds if ro.dynamic_sampling else 1
        out = Rollout(version=version)
        while True:
            # The first round draws a full step; later rounds only the groups still missing.
            idx = sampler.next_batch(want - len(out.kept))
            ids = [self.prompts(i) for i in idx]
            seed = (request_seed(self.cfg.schedule.seed, step, want, max_rounds,
                                 len(out.prompts)) if ro.per_request_seed else None)
            t0 = time.perf_counter()
            groups = self.client.generate(GenerateRequest(
                model=model, prompts=ids, n=ro.group_size, max_tokens=ro.max_new_tokens,
                temperature=ro.temperature, top_p=ro.top_p, seed=seed,
            ))
            t1 = time.perf_counter()
            problems = [self.prompts.problems[i] for i in idx]
            out.scored.extend(self.scorer.score(groups, [p.answer for p in problems], problems))
            out.t_generate += t1 - t0
            out.t_reward += time.perf_counter() - t1
            out.prompts += idx
            out.prompt_ids += ids
            out.groups += groups
            out.rounds += 1
            if not ro.dynamic_sampling:
                out.kept = list(range(len(out.groups)))
                break
            out.kept = informative_groups(out.scored.rewards, limit=want)
            if len(out.kept) >= want or out.rounds >= max_rounds:
                break
        out.sampler_state = sampler.state_dict()
        return out


def rollout_metrics(roll: Rollout, n_masked: int) -> dict[str, float]:
    """A step's sampling metrics. Rewards and lengths are over every sampled completion (all
    rounds), so `reward/mean` measures the policy, not the groups dynamic sampling kept."""
    flat = [r for row in roll.scored.rewards for r in row]
    comps = [c for g in roll.groups for c in g]
    lens = [len(c.token_ids) for c in comps]
    n_groups = len(roll.groups)
    n_zero_var = sum(1 for row in roll.scored.rewards if not is_informative(row))
    kept_comps = sum(len(roll.groups[i]) for i in roll.kept)
    return {
        "reward/mean": statistics.fmean(flat),
        "reward/std": statistics.pstdev(flat),
        "reward/accuracy": statistics.fmean(x for row in roll.scored.correct for x in row),
        "reward/format": statistics.fmean(x for row in roll.scored.format for x in row),
        "reward/timeouts": float(roll.scored.timed_out),
        "reward/errors": float(roll.scored.errors),
        # Each function's score and each part, as a mean over completions (`reward/<key>`);
        # `accuracy` and `format` (the built-ins' parts) override the lines above.
        **{f"reward/{k}": v / roll.scored.count for k, v in roll.scored.sums.items()
           if roll.scored.count},
        "completion/mean_tokens": statistics.fmean(lens),
        "completion/clipped_frac": statistics.fmean(
            float(c.finish_reason == "length") for c in comps),
        "perf/rollout_tokens_per_s": sum(lens) / max(roll.t_generate, 1e-9),
        "rollout/zero_variance_frac": n_zero_var / n_groups,
        "rollout/dropped_frac": (n_groups - len(roll.kept)) / n_groups,
        "rollout/sampling_rounds": float(roll.rounds),
        "rollout/groups_trained": float(len(roll.kept)),
        "rollout/masked_truncated_frac": n_masked / kept_comps if kept_comps else 0.0,
    }
