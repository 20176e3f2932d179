"""Which replica samples the next prompt of a step.

Every prompt of a step is ready at once. Sent all at once, they split evenly whatever the
replicas' speeds, and the step waits for the slowest replica's half. Bounded instead, each
replica holds at most `inflight_bound` prompts in flight and the next prompt waits for whichever
replica frees a slot first: a replica k times slower frees its slots k times less often, so it
gets about 1/k of a fast one's share. The bound is half of an even share: each replica starts
with that, and the other half of the step goes to whoever finishes first. Its price is a smaller
batch per replica while a step runs, which costs time on an engine whose batches are nearly
free to grow (a GPU far from its compute bound): up to 2x with equal replicas
(docs/benchmarks.md measures both kinds of engine). So the pool routes bounded only while the
replicas' measured speeds (completion tokens per second each was busy during the last call)
differ by more than `SPEED_SPREAD`, and sends everything at once while they match. A bound
above what the engine runs at once (`max_num_seqs` sequences) would only queue prompts inside
a replica, where no other can take them, so it never exceeds that.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from orchestrator.run.pool_faults import replica_fault
from services.generator.launcher import GeneratorError
from services.memory.plan import max_num_seqs
from services.schemas import Completion, GenerateRequest

INFLIGHT_SHARE = 0.5
"""Share of an even split a replica holds in flight at most (None in `inflight_bound`: all)."""
SPEED_SPREAD = 1.5
"""Live replicas whose measured speeds differ by more than this factor are routed bounded."""
ROUTES = ("adaptive", "bounded", "even")


def inflight_bound(prompts: int, live: int, n: int, max_num_seqs: int,
                   share: float | None = INFLIGHT_SHARE) -> int | None:
    """Prompt requests one replica may have in flight during a call (None: unbounded)."""
    if share is None:
        return None
    even = math.ceil(prompts / max(live, 1))
    return max(1, min(math.ceil(even * share), max_num_seqs // max(n, 1)))


def uneven(speeds: Sequence[float | None]) -> bool:
    """Whether the replicas measured so far differ in speed by more than `SPEED_SPREAD`."""
    known = [x for x in speeds if x]
    return len(known) >= 2 and max(known) > SPEED_SPREAD * min(known)


def pick_replica(outstanding: Sequence[int], up: Sequence[bool],
                 inflight: Sequence[int] | None = None, bound: int | None = None) -> int | None:
    """The live replica with a free slot and the fewest outstanding tokens (the lowest index on
    a tie); None when every live replica is at `bound` (the caller waits for a slot)."""
    live = [i for i, ok in enumerate(up) if ok]
    if not live:
        raise GeneratorError("no generator replica is up")
    if bound is not None:
        live = [i for i in live if inflight[i] < bound]
    return min(live, key=lambda i: (outstanding[i], i)) if live else None


class PoolSampling:
    """ReplicaPool's client interface (what the loop and the evaluations call on a generator):
    sampling routed as above, sleep and wake replica by replica. Uses the pool's `replicas`,
    `_lock` (a Condition), `route` (one of ROUTES), `rejoin`, `mark_down`."""

    def take_counts(self) -> dict[int, int]:
        """Training prompt requests each replica answered since the last call."""
        with self._lock:
            out = {r.index: r.prompts for r in self.replicas}
            for r in self.replicas:
                r.prompts = 0
        return out

    def for_eval(self) -> EvalClient:
        """The pool for evaluations: the same routing, not counted as training prompts."""
        return EvalClient(self)

    def _share(self) -> float | None:
        if self.route == "adaptive":
            return INFLIGHT_SHARE if uneven([r.speed for r in self.replicas if r.up]) else None
        return INFLIGHT_SHARE if self.route == "bounded" else None

    def generate(self, req: GenerateRequest, *, count: bool = True) -> list[list[Completion]]:
        self.rejoin()
        want = self.current[2].version if self.current else None
        for r in self.replicas:
            if r.up and want is not None and r.version != want:
                raise GeneratorError(f"replica {r.index} serves version {r.version}, "
                                     f"not {want}")
        bound = inflight_bound(len(req.prompts), sum(r.up for r in self.replicas), req.n,
                               max_num_seqs(self.cfg), self._share())
        busy: dict[int, list[float]] = {}
        """Per replica: first send, last answer, completion tokens (this call)."""
        workers = max(1, min(64, len(req.prompts)))
        with ThreadPoolExecutor(workers) as pool:
            out = list(pool.map(lambda i: self._one(req, i, bound, count, busy),
                                range(len(req.prompts))))
        for k, (t0, t1, tokens) in busy.items():
            if t1 > t0 and tokens and self.replicas[k].up:  # one that failed is measured anew
                self.replicas[k].speed = tokens / (t1 - t0)
        return out

    def _one(self, req: GenerateRequest, i: int, bound: int | None, count: bool,
             busy: dict[int, list[float]]) -> list[Completion]:
        cost = len(req.prompts[i]) + req.n * req.max_tokens
        while True:
            with self._lock:
                # Wait for a free slot on any live replica (raises once none is left).
                while (k := pick_replica([x.outstanding for x in self.replicas],
                                         [x.up for x in self.replicas],
                                         [x.inflight for x in self.replicas], bound)) is None:
                    self._lock.wait()
                r = self.replicas[k]
                r.outstanding += cost
                r.inflight += 1
                busy.setdefault(k, [time.perf_counter(), 0.0, 0])
            try:
                out = r.client.generate_one(req, i)
            except Exception as e:
                if not replica_fault(e):
                    raise
                self.mark_down(r, e)
                continue
            finally:
                with self._lock:
                    r.outstanding -= cost
                    r.inflight -= 1
                    self._lock.notify_all()
            with self._lock:
                r.prompts += count
                busy[k][1] = time.perf_counter()
                busy[k][2] += sum(len(c.token_ids) for c in out)
            return out

    def sleep(self, level: int = 1) -> None:
        """Each live replica on its own: one that fails is a replica fault (taken out); raises
        only when none went to sleep because none can (no sleep mode: the loop stays awake)."""
        refusal = None
        for r in [x for x in self.replicas if x.up]:
            try:
                r.client.sleep(level)
                r.asleep = True
            except Exception as e:  # noqa: BLE001 - sorted below
                if replica_fault(e):
                    self.mark_down(r, e)
                else:
                    refusal = e
        if refusal is not None and not any(r.asleep for r in self.replicas):
            raise refusal

    def wake_up(self) -> None:
        """Wake each sleeping replica; one that does not wake is taken out and restarted (it
        comes back awake): never raises, the next generate finds who is left."""
        for r in self.replicas:
            if r.up and r.asleep:
                r.asleep = False
                try:
                    r.client.wake_up()
                except Exception as e:  # noqa: BLE001 - a replica fault, whatever it answered
                    self.mark_down(r, e)


class EvalClient:
    """The pool's sampling interface for evaluations (their prompts are not training's)."""

    def __init__(self, pool: PoolSampling):
        self.pool = pool

    def generate(self, req: GenerateRequest) -> list[list[Completion]]:
        return self.pool.generate(req, count=False)

    def models(self) -> list[str]:
        return self.pool.models()
