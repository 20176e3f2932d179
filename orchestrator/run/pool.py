"""Several vLLM replicas used as one generator (`generator.replicas`, `mathrl up --generators`).

Each replica is a `GeneratorReplica` Ray actor on a node with a `generator` resource; the
actor owns its vLLM process and its node's disk, and this pool talks to each server's URL for
sampling. Guarantees the loop relies on:

- A step's prompts go one request each; a replica holds a bounded number in flight and the
  next prompt goes to whichever frees a slot first, so a slow replica gets less
  (orchestrator/run/pool_route.py).
- A replica samples only the version every other replica serves: `apply` loads a version on
  all live replicas and checks each lists it; a replica that comes back from a restart loads
  the current version before it takes prompts again.
- A replica that fails (connection lost, 5xx after the client's retries, actor lost) is
  restarted in the background while its prompts go to the others, at most
  `generator.max_restarts` times per run; then it stays down until the next run. Only when
  none is left does the step fail, into the run's recovery path. A load that fails because
  of the learner or the version is not the replica's fault (orchestrator/run/pool_faults.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import ray

from orchestrator.run.pool_actors import RayCalls
from orchestrator.run.pool_faults import AdapterRefused, LearnerLost, files_fault, refused
from orchestrator.run.pool_route import PoolSampling
from services.config import RunConfig
from services.generator.client import GeneratorClient
from services.generator.launcher import GeneratorError
from services.generator.replica import LoadReport, ReplicaInfo
from services.schemas import AdapterRef

log = logging.getLogger("mathrl.pool")
CALL_TIMEOUT_S = 600.0


@dataclass
class Replica:
    index: int
    actor: object
    info: ReplicaInfo | None = None
    client: GeneratorClient | None = None
    up: bool = False
    """It takes prompts (it serves the current version)."""
    ready: bool = False
    """Its server is back but it has not loaded the current version yet."""
    version: int | None = None
    """The adapter version it serves (None: none of the current run's)."""
    restarting: object | None = None
    """The actor call bringing its server back, while it is down."""
    down_since: float = 0.0
    restarts: int = 0
    """Restarts this run (bounded by `generator.max_restarts`)."""
    replaced: bool = False
    """The current restart already replaced a lost actor (a second loss is another restart)."""
    asleep: bool = False
    outstanding: int = 0
    inflight: int = 0
    prompts: int = 0
    """Training prompt requests it answered since the counter was last read."""
    sync_s: float = 0.0
    speed: float | None = None
    """Completion tokens per second it was busy during the last call (None: not measured)."""


@dataclass
class ReplicaPool(PoolSampling):
    cfg: RunConfig
    model_path: str
    api_key: str | None = None
    replicas: list[Replica] = field(default_factory=list)
    events: deque = field(default_factory=deque)
    """Notes for the active run (a replica lost, back, recycled), drained by the scheduler."""
    current: tuple[str, str, AdapterRef] | None = None
    """(run name, alias, ref) of the version every live replica must serve."""
    files_of: Callable[[AdapterRef], object] | None = None
    """With `adapter_transport = "ray"`: the ObjectRef of a version's files (the learner's)."""
    calls: RayCalls = field(default_factory=RayCalls)
    make_client: Callable[[str], GeneratorClient] | None = None
    """The HTTP client of a replica's URL (default: GeneratorClient)."""
    call_timeout_s: float = CALL_TIMEOUT_S
    route: str = "adaptive"
    """pool_route: `adaptive` (bounded while the replicas' speeds differ), `bounded`, `even`."""
    in_run: bool = False
    _files: object | None = None
    """The current version's files in the object store: read by the learner once, fetched by
    each replica (and by one that rejoins later)."""
    _lock: threading.Condition = field(default_factory=threading.Condition)
    """Guards up flags and routing counters; notified when a slot frees or a replica goes."""

    # ------------------------------------------------------------------ lifecycle
    def replica_config(self, index: int) -> RunConfig:
        """Replica `index`'s config: its own vLLM `--seed`, so that replicas sampling without
        per-request seeds do not draw the same random streams."""
        sched = self.cfg.schedule
        return self.cfg.model_copy(update={"schedule": sched.model_copy(
            update={"seed": sched.seed + index})})

    def _spawn(self, index: int):
        return self.calls.spawn(self.replica_config(index), index=index,
                                model_path=self.model_path, api_key=self.api_key)

    def start(self) -> ReplicaPool:
        n = self.cfg.generator.replicas
        self.replicas = [Replica(i, self._spawn(i)) for i in range(n)]
        infos = self.calls.get([r.actor.start.remote() for r in self.replicas],
                               timeout=self.cfg.generator.startup_timeout_s + 60)
        for r, info in zip(self.replicas, infos, strict=True):
            self._connect(r, info)
            r.up = True
        log.info("generator replicas: %s", ", ".join(
            f"{r.index} at {r.info.url} on node {r.info.node_id[:8]}" for r in self.replicas))
        return self

    def _connect(self, r: Replica, info: ReplicaInfo) -> None:
        if r.client is not None:
            r.client.close()
        r.info = info
        r.client = self.make_client(info.url) if self.make_client else GeneratorClient(
            info.url, timeout_s=self.cfg.generator.request_timeout_s, api_key=self.api_key)

    def stop(self) -> None:
        for r in self.replicas:
            try:
                self.calls.get(r.actor.stop.remote(), timeout=60)
            except Exception:  # noqa: BLE001 - a lost actor took its server with it
                pass
            self.calls.kill(r.actor)
            if r.client is not None:
                r.client.close()

    def note(self, text: str) -> None:
        log.warning(text)
        self.events.append(text)

    # ------------------------------------------------------------------ faults
    def mark_down(self, r: Replica, err: BaseException | str, *, counted: bool = True) -> None:
        """Take a live replica out and restart it (once, however many requests saw it fail)."""
        with self._lock:
            if not r.up:
                return
            r.up = False
            self._lock.notify_all()  # prompts waiting for a slot look again
        self._down(r, err, counted=counted)

    def _down(self, r: Replica, err: BaseException | str, *, counted: bool = True) -> None:
        r.version, r.down_since, r.sync_s, r.asleep, r.ready, r.speed = \
            None, time.monotonic(), 0.0, False, False, None
        # `err`: the failure, or (a string) why it is restarted on purpose.
        what = err if isinstance(err, str) else \
            f"failed ({type(err).__name__}: {str(err)[:160]})"
        others = [x.index for x in self.replicas if x.up]
        if self._restart(r, counted=counted):
            budget = f" (restart {r.restarts} of {self.cfg.generator.max_restarts} this run)" \
                if counted else ""
            self.note(f"generator replica {r.index} ({r.info.url}) {what}; restarting "
                      f"it{budget}, its prompts go to replica(s) {others}")
        else:
            self.note(f"generator replica {r.index} ({r.info.url}) {what}; it used up its "
                      f"{self.cfg.generator.max_restarts} restarts and stays down until the "
                      f"next run, its prompts go to replica(s) {others}")

    def _restart(self, r: Replica, *, counted: bool = True, replace: bool = False) -> bool:
        """Start bringing `r` back in the background: its actor restarts the server, or
        (`replace`) a new actor placed by Ray starts one. False when a counted restart would
        pass the run's budget: it then stays down."""
        r.restarting = None
        if counted:
            if r.restarts >= self.cfg.generator.max_restarts:
                return False
            r.restarts += 1
            r.replaced = False
        if replace:
            self.calls.kill(r.actor)
            r.actor, r.replaced = self._spawn(r.index), True
            r.restarting = r.actor.start.remote()
        else:
            r.restarting = r.actor.restart.remote()
        return True

    def _finish_restart(self, r: Replica, timeout: float) -> bool:
        """Collect `r`'s restart if it is done (waiting up to `timeout`); True once its server
        answers. A failed try is retried in the background within the budget."""
        deadline = time.monotonic() + timeout
        while r.restarting is not None:
            left = max(0.0, deadline - time.monotonic())
            ready, _ = self.calls.wait([r.restarting], timeout=left)
            if not ready:
                return False
            try:
                info = self.calls.get(r.restarting, timeout=self.call_timeout_s)
            except ray.exceptions.RayActorError as e:
                # Its actor is lost (its node died): a new one, placed by Ray. The first
                # replacement is part of this restart; losing that one too is another.
                why, again = e, {"replace": True, "counted": r.replaced}
            except Exception as e:  # noqa: BLE001 - the server did not start
                why, again = e, {"counted": True}
            else:
                r.restarting = None
                self._connect(r, info)
                return True
            if not self._restart(r, **again):
                self.note(f"generator replica {r.index} did not come back ({type(why).__name__}"
                          f": {str(why)[:160]}); it used up its "
                          f"{self.cfg.generator.max_restarts} restarts and stays down until "
                          "the next run")
        return False

    def rejoin(self) -> None:
        """Between requests: a replica whose restart finished loads the current version, and
        only then takes prompts again."""
        for r in self.replicas:
            if r.up:
                continue
            if r.restarting is not None and self._finish_restart(r, timeout=0):
                r.ready = True
            if r.ready:
                self._readmit(r)

    def _readmit(self, r: Replica) -> None:
        if self.current is not None:
            try:
                self._check(r, self.calls.get(self._load(r), timeout=self.call_timeout_s))
            except Exception as e:  # noqa: BLE001 - sorted out by _load_failed
                self._load_failed(r, e)
                return
        self._admit(r)

    def _admit(self, r: Replica) -> None:
        with self._lock:
            r.up, r.ready = True, False
            self._lock.notify_all()
        self.note(f"generator replica {r.index} is back after "
                  f"{time.monotonic() - r.down_since:.1f} s, serving "
                  f"{f'version {r.version}' if self.current else 'the base model'}")

    def _load_failed(self, r: Replica, err: BaseException) -> None:
        """A version did not load on `r`: raise when the version or the learner is at fault
        (no replica is to blame), else take `r` out and restart it."""
        version = self.current[2].version
        if refused(err):
            raise AdapterRefused(f"generator replica {r.index} refused version {version} "
                                 f"({str(err)[:300]}); restarting replicas would not help: "
                                 "check the adapter and `generator.adapter_transport`") from err
        if self._files is not None and (lost := files_fault(self.calls, self._files, version)):
            raise lost from err
        if r.up:
            self.mark_down(r, err)
        else:
            self._down(r, err)

    def _wait_back(self) -> None:
        """Wait for every restart under way; a replica back is up (serving no version yet)."""
        for r in self.replicas:
            if r.restarting is not None and self._finish_restart(
                    r, timeout=self.cfg.generator.startup_timeout_s + 60):
                r.ready = True
        for r in self.replicas:
            if r.ready:
                r.up, r.ready, r.version = True, False, None

    def recover(self) -> str:
        """The run's recovery path (no replica was left): restart every down replica within its
        budget and wait. The caller then serves the restored version on all of them. Between
        runs (the scheduler's watchdog) every replica has a fresh budget."""
        if not self.in_run:
            for r in self.replicas:
                r.restarts = 0
        for r in self.replicas:
            if not (r.up or r.ready or r.restarting is not None) and not self._restart(r):
                self.note(f"generator replica {r.index} used up its restarts; it stays down")
        self._wait_back()
        if not self.up():
            raise GeneratorError("no generator replica could be restarted")
        return f"generator replicas restarted ({sum(r.up for r in self.replicas)} up)"

    def _memory(self, r: Replica) -> int | None:
        """`r`'s memory; a replica that cannot say (its actor lost) is a replica fault."""
        try:
            return self.calls.get(r.actor.memory.remote(), timeout=self.call_timeout_s)
        except Exception as e:  # noqa: BLE001 - handled like any fault of the replica
            self.mark_down(r, e)
            return None

    def recycle(self, bound_bytes: int, step: int) -> bool:
        """Restart the live replica holding the most memory past the bound, one at a time: none
        while another is on its way back, so the others sample meanwhile (README)."""
        if any(r.restarting is not None or r.ready for r in self.replicas):
            return False
        held = [(pss, r.index) for r in self.replicas if r.up
                if (pss := self._memory(r)) is not None and pss > bound_bytes]
        if not held or any(r.restarting is not None for r in self.replicas):
            return False  # nothing past it, or a replica just failed and is being restarted
        pss, i = max(held)
        r = self.replicas[i]
        alone = sum(x.up for x in self.replicas) == 1
        self.mark_down(r, f"recycled after step {step}: it held {pss / 2**30:.2f} GiB, "
                          f"bound {bound_bytes / 2**30:g} GiB", counted=False)
        # Alone, nobody samples meanwhile: wait for it, then serve the version again.
        if alone and self._finish_restart(r, timeout=self.cfg.generator.startup_timeout_s + 60):
            r.ready = True
            try:
                self._readmit(r)
            except Exception as e:  # noqa: BLE001 - met again by the next step's rejoin
                # The learner's or the version's fault: recycling runs between steps, outside
                # the run's fault handler; the next generate raises it inside.
                log.warning("replica %d did not load the current version yet: %s", i, e)
        return True

    def memory(self) -> int | None:
        held = [m for r in self.replicas if r.up and (m := self._memory(r)) is not None]
        return max(held) if held else None

    # ------------------------------------------------------------------ policy versions
    def _load(self, r: Replica):
        """Have `r` serve the current version (an actor call)."""
        run_name, alias, ref = self.current
        return r.actor.load.remote(run_name, alias, ref, self._files)

    def _check(self, r: Replica, report: LoadReport) -> None:
        """Versions are checked, not assumed: the server must list the name just loaded."""
        want = self.current[2].version
        if report.version != want or report.name not in report.models:
            raise GeneratorError(f"replica {r.index} does not serve version {want} after "
                                 f"loading it (it lists {report.models})")
        r.version, r.sync_s = report.version, report.seconds

    def apply(self, run_name: str, alias: str, ref: AdapterRef) -> None:
        """Serve `ref` on every live replica (and one whose restart is done), checked. A replica
        that fails to is restarted and loads it when back. Raises LearnerLost when the learner
        does not deliver the files, AdapterRefused when a replica refuses the version, and
        GeneratorError when no replica serves it."""
        files = self.files_of(ref) if self.cfg.generator.adapter_transport == "ray" else None
        if files is not None:
            ready, _ = self.calls.wait([files], timeout=self.call_timeout_s, fetch_local=False)
            if not ready:  # nothing was sent: no replica is to blame
                raise LearnerLost(f"the learner did not produce the files of version "
                                  f"{ref.version} within {self.call_timeout_s:.0f} s")
        self.current, self._files = (run_name, alias, ref), files
        targets = [r for r in self.replicas if r.up or r.ready]
        calls = [self._load(r) for r in targets]
        for r, call in zip(targets, calls, strict=True):
            try:
                self._check(r, self.calls.get(call, timeout=self.call_timeout_s))
            except Exception as e:  # noqa: BLE001 - sorted out by _load_failed
                self._load_failed(r, e)
                continue
            if r.ready:
                self._admit(r)
        if not self.up():
            raise GeneratorError(f"no generator replica serves version {ref.version}")

    def forget_versions(self) -> None:
        self.current = self._files = None
        for r in self.replicas:
            r.version = None

    def new_run(self) -> None:
        """A run starts: no version of it is served yet, each replica gets
        `generator.max_restarts` again (a budget per run, as for one server), and a replica
        that used up the last run's budget is restarted."""
        self.forget_versions()
        self.events.clear()
        self.in_run = True
        for r in self.replicas:
            r.restarts = 0
            if not (r.up or r.ready or r.restarting is not None):
                self._restart(r, counted=False)
                self.note(f"generator replica {r.index} was down: restarted for this run")
        if not self.up():
            self._wait_back()  # nothing else could sample this run's first step

    def release(self) -> None:
        """Unload the run's adapters from every live replica (best effort, at run end)."""
        for r in self.replicas:
            if r.up:
                try:
                    self.calls.get(r.actor.release.remote(), timeout=60)
                except Exception:  # noqa: BLE001 - the server may be gone
                    pass
        self.forget_versions()
        self.in_run = False

    # ------------------------------------------------------------------ the client interface
    @property
    def base_url(self) -> str:
        return next((r.info.url for r in self.replicas if r.up), self.replicas[0].info.url)

    def models(self) -> list[str]:
        """What a live replica lists; with none up, an error (as a server that is down gives),
        so that a health check does not call the generator fine."""
        live = next((r for r in self.replicas if r.up), None)
        if live is None:
            raise GeneratorError("no generator replica is up")
        return live.client.models()

    def up(self) -> bool:
        return any(r.up for r in self.replicas)

    def close(self) -> None:
        """Clients stay open until `stop` (the pool outlives a run)."""
