"""Faults during a run: a dead or hung learner or generator is replaced and the run goes on
from its last checkpoint.

Every fault is handled the same way, so that the learner, the generator and the loop never
disagree about the policy: fix the broken process (respawn the learner actor; restart the
generator we launched, or wait for one compose restarts), restore learner and loop from the
newest checkpoint (weights, optimizer, RNGs, step, prompt order), serve that version again,
and let the scheduler step on. Steps after the checkpoint are redone and recorded again in
place (the store keys metrics by step), so each step is recorded once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import httpx
import ray

from orchestrator.stack import RunHandle, Stack
from services.generator.launcher import GeneratorError
from services.learner import checkpoint

log = logging.getLogger("mathrl.recovery")


def classify(err: BaseException) -> str | None:
    """`learner`, `generator` or None (not a process fault: the run fails)."""
    if isinstance(err, ray.exceptions.RayActorError | ray.exceptions.GetTimeoutError):
        return "learner"
    if isinstance(err, ray.exceptions.RayTaskError):
        return None  # the learner raised: a bug or bad input, not a lost process
    if isinstance(err, httpx.TransportError | GeneratorError):
        return "generator"
    if isinstance(err, httpx.HTTPStatusError) and err.response.status_code >= 500:
        return "generator"
    return None


class Recovery:
    def __init__(self, stack: Stack, handle: RunHandle, *, note: Callable[[int, str], None]):
        self.stack, self.handle, self.note = stack, handle, note
        cfg = handle.loop.cfg
        self.limits = {"learner": cfg.learner.max_restarts,
                       "generator": cfg.generator.max_restarts}
        self.counts = {"learner": 0, "generator": 0}

    def handle_fault(self, err: BaseException) -> bool:
        """Recover from `err` if it is a process fault within its restart budget; False if the
        run must fail. Raises if recovery itself fails."""
        kind = classify(err)
        if kind is None or self.counts[kind] >= self.limits[kind]:
            return False
        self.counts[kind] += 1
        loop = self.handle.loop
        at = loop.state.step + 1
        t0 = time.monotonic()
        log.warning("step %d: %s fault (%s: %s); recovering", at, kind, type(err).__name__,
                    str(err).splitlines()[0][:200] if str(err) else "")
        if kind == "generator":
            done = self.stack.recover_generator()
            self.handle.sync.reset()
        else:
            self.handle.replace_learner()
            done = "learner respawned"
        ckpt = checkpoint.latest(self.handle.checkpoints)
        if ckpt is None:
            raise RuntimeError(f"{kind} fault at step {at} and no checkpoint to resume from")
        loop.restore(str(ckpt))
        redo = f"; steps {loop.state.step + 1}-{at - 1} are redone" \
            if at - 1 > loop.state.step else ""
        self.note(loop.state.step, (
            f"{kind} fault at step {at} ({type(err).__name__}): {done}, resumed from the "
            f"checkpoint of step {loop.state.step} in {time.monotonic() - t0:.1f} s{redo} "
            f"({kind} restart {self.counts[kind]} of {self.limits[kind]})"))
        return True
