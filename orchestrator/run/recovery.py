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

from orchestrator.run.pool_faults import LearnerLost
from orchestrator.run.stack import RunHandle, Stack
from services.generator.launcher import GeneratorError
from services.learner import checkpoint

log = logging.getLogger("mathrl.recovery")


def classify(err: BaseException) -> str | None:
    """`learner`, `generator` or None (not a process fault: the run fails). A replica pool
    sorts its own load failures first (orchestrator/run/pool_faults.py): LearnerLost is the
    learner's, AdapterRefused (a version no replica would load) no process's."""
    if isinstance(err, LearnerLost | ray.exceptions.RayActorError
                  | ray.exceptions.GetTimeoutError):
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
        ckpt = checkpoint.latest(self.handle.checkpoints)
        if ckpt is None:
            raise RuntimeError(f"{kind} fault at step {at} and no checkpoint to resume from")
        if kind == "generator":
            done = self.stack.recover_generator()
            self.handle.sync.reset()
            loop.restore(str(ckpt))
        else:
            done = self._respawn_learner(str(ckpt), loop.cfg.learner.respawn_wait_s)
        redo = f"; steps {loop.state.step + 1}-{at - 1} are redone" \
            if at - 1 > loop.state.step else ""
        self.note(loop.state.step, (
            f"{kind} fault at step {at} ({type(err).__name__}): {done}, resumed from the "
            f"checkpoint of step {loop.state.step} in {time.monotonic() - t0:.1f} s{redo} "
            f"({kind} restart {self.counts[kind]} of {self.limits[kind]})"))
        return True

    def recycle_generator(self, step: int) -> bool:
        """Between steps: restart the generator we launched if its memory passed
        `generator.recycle_above_gib`, and serve the current policy again. True if it did.
        A restart that fails raises (the run fails with the reason), as a fault would."""
        bound = self.handle.loop.cfg.generator.recycle_above_gib
        if bound is not None and self.stack.pool is not None:
            # Replica by replica, in the background: the others sample meanwhile, and each
            # loads the current version before it takes prompts again (pool.rejoin).
            return self.stack.pool.recycle(int(bound * 2**30), step)
        held = self.stack.generator_memory() if bound is not None else None
        if held is None or held <= bound * 2**30:
            return False
        t0 = time.monotonic()
        done = self.stack.recover_generator()
        self.handle.sync.reset()
        self.handle.loop.serve_current()  # the same version, loaded by the new server
        after = self.stack.generator_memory() or 0
        self.note(step, f"generator recycled after step {step}: it held {held / 2**30:.2f} GiB "
                        f"(bound {bound:g} GiB); {done}, {after / 2**30:.2f} GiB after, in "
                        f"{time.monotonic() - t0:.1f} s")
        return True

    def _respawn_learner(self, ckpt: str, wait_s: float) -> str:
        """A new learner actor, restored from `ckpt`. When the old one's node died, Ray may
        still count that node alive for a while and place the new actor there, where it dies
        before it runs (ActorDiedError): start another until one runs or `wait_s` is over."""
        deadline = time.monotonic() + wait_s
        attempt = 0
        while True:
            attempt += 1
            self.handle.replace_learner()
            try:
                self.handle.loop.restore(ckpt)
                return "learner respawned" + (f" ({attempt} tries)" if attempt > 1 else "")
            except ray.exceptions.RayActorError as e:
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"no learner could be started in {wait_s:.0f} s "
                                       f"({attempt} tries): {e}") from e
                log.info("learner respawn %d did not run (%s); trying again", attempt,
                         type(e).__name__)
                time.sleep(2.0)
