"""A run's reward: its functions (`registry.Resolved`) applied to every sampled completion, the
weighted sum as the reward, each function's score and parts as metrics.

Where each function runs (`functions.runs_in`): plugins and `math` in the grader pool's worker
processes, one completion per item under `reward.timeout_s`; pure built-ins in this process;
the HTTP verifier in a thread of its own, beside the pool. A call that raises, returns no
score or runs out of time scores 0 for its completion (so do its parts), is counted
(`timeouts`, `errors`), and its function's first failure becomes one note for the run; the
step goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from services.rewards.functions import RESERVED_NAMES, call_reward
from services.rewards.http_verifier import VerifierTimeout
from services.rewards.pool import CallOutcome, GraderPool
from services.rewards.registry import Resolved

__all__ = ["EngineScores", "RewardEngine", "Sample"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Sample:
    """One completion with what a reward function is given about it."""

    prompt: str
    completion: str
    gold: str
    metadata: dict[str, Any] = field(default_factory=dict)
    completion_tokens: list[str] | None = None


@dataclass
class EngineScores:
    totals: list[float]
    """Per sample: the weighted sum over functions."""
    metrics: dict[str, list[float]]
    """Per sample, under the metric name after `reward/`: each function's own score
    (`<function>`) and each part (`<part>`, or `<function>/<part>` when the name is taken)."""
    timeouts: int = 0
    errors: int = 0


def _failure(o: CallOutcome) -> str | None:
    if o.timed_out:
        return "ran past the per-completion time limit"
    if o.error is not None:
        return o.error
    return None if o.value is not None else "returned nothing"


class RewardEngine:
    def __init__(self, functions: Sequence[Resolved], *, timeout_s: float, num_workers: int):
        if not functions:
            raise ValueError("a reward needs at least one function")
        self.functions = list(functions)
        self.tokens = any(f.tokens for f in self.functions)
        """Whether samples must carry `completion_tokens`."""
        in_workers = [f for f in self.functions if f.runs_in == "worker"]
        self.pool = GraderPool(n_workers=num_workers, timeout_s=timeout_s,
                               preload=tuple({f.target for f in in_workers})) \
            if in_workers else None
        self._batch = {f.name: f.fn.batch(f.options) for f in self.functions
                       if f.runs_in == "batch"}
        self._background = ThreadPoolExecutor(1, thread_name_prefix="mathrl-reward") \
            if self._batch else None
        self._keys: dict[tuple[str, str], str] = {}
        self._noted: set[str] = set()
        self._notes: list[str] = []

    # ------------------------------------------------------------------ scoring
    def score(self, samples: Sequence[Sample]) -> EngineScores:
        """Every function on every sample; never raises for a function's failure."""
        samples = list(samples)
        running: dict[str, Future] = {}
        if self._background is not None:  # the verifier's network time overlaps the pool's
            items = [{"prompt": s.prompt, "completion": s.completion, "gold": s.gold,
                      "metadata": s.metadata} for s in samples]
            running = {name: (self._background.submit(v.score, items),
                              v.time_bound_s(len(items)))
                       for name, v in self._batch.items()}
        outcomes = self._in_workers(samples)
        for f in self.functions:
            if f.runs_in == "parent":
                outcomes[f.name] = [self._here(f, s) for s in samples]
        for name, (future, bound_s) in running.items():
            outcomes[name] = self._collect(future, len(samples), bound_s)
        return self._combine(outcomes, len(samples))

    def _in_workers(self, samples: list[Sample]) -> dict[str, list[CallOutcome]]:
        fns = [f for f in self.functions if f.runs_in == "worker"]
        if not fns:
            return {}
        items = [(f.target, (s.prompt, s.completion, s.gold, s.metadata, f.options,
                             s.completion_tokens if f.tokens else None))
                 for f in fns for s in samples]
        flat = self.pool.call(items)
        n = len(samples)
        return {f.name: flat[k * n : (k + 1) * n] for k, f in enumerate(fns)}

    @staticmethod
    def _here(f: Resolved, s: Sample) -> CallOutcome:
        try:
            return CallOutcome(call_reward(f.fn, s.prompt, s.completion, s.gold, s.metadata,
                                           f.options,
                                           s.completion_tokens if f.tokens else None))
        except Exception as e:  # noqa: BLE001 - a failure costs this completion only
            return CallOutcome(error=f"{type(e).__name__}: {e}"[:500])

    @staticmethod
    def _collect(future: Future, n: int, bound_s: float) -> list[CallOutcome]:
        try:  # bounded on its own; this bound is for a verifier that somehow is not
            results = future.result(timeout=bound_s)
        except FutureTimeout:
            future.cancel()
            results = [VerifierTimeout(f"no scores within {bound_s:.0f} s")] * n
        except Exception as e:  # noqa: BLE001 - the verifier never raises; belt and braces
            results = [e] * n
        return [CallOutcome(timed_out=True) if isinstance(r, VerifierTimeout)
                else CallOutcome(error=f"{type(r).__name__}: {r}"[:500])
                if isinstance(r, Exception) else CallOutcome(r) for r in results]

    def _key(self, function: str, part: str) -> str:
        """A part's metric name, fixed at its first sight for the rest of the run: the part's
        own name, unless the scorer or another function or part already uses it."""
        key = self._keys.get((function, part))
        if key is None:
            taken = RESERVED_NAMES | {f.name for f in self.functions} | set(self._keys.values())
            key = part if part not in taken else f"{function}/{part}"
            self._keys[(function, part)] = key
        return key

    def _combine(self, outcomes: dict[str, list[CallOutcome]], n: int) -> EngineScores:
        out = EngineScores(totals=[0.0] * n, metrics={})
        for f in self.functions:
            scores = out.metrics.setdefault(f.name, [0.0] * n)
            for i, o in enumerate(outcomes[f.name]):
                failure = _failure(o)
                if failure is not None:
                    out.timeouts += o.timed_out
                    out.errors += not o.timed_out
                    self._note(f.name, failure)
                    continue
                score, parts = o.value
                scores[i] = score
                out.totals[i] += f.weight * score
                for part, value in parts.items():
                    out.metrics.setdefault(self._key(f.name, part), [0.0] * n)[i] = value
        return out

    def _note(self, name: str, failure: str) -> None:
        if name in self._noted:
            return
        self._noted.add(name)
        text = (f"reward function {name!r} failed on a completion ({failure[:300]}); such "
                "completions score 0 for it and are counted in reward/timeouts or "
                "reward/errors; this note is not repeated")
        log.debug(text)
        self._notes.append(text)

    def take_notes(self) -> list[str]:
        """Notes not yet handed out: one per function, at its first failure in this run."""
        notes, self._notes = self._notes, []
        return notes

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
        for verifier in self._batch.values():
            verifier.close()
        if self._background is not None:
            self._background.shutdown(wait=True, cancel_futures=True)
