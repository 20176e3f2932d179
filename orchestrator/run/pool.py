"""Several vLLM replicas used as one generator (`generator.replicas`, `mathrl up --generators`).

Each replica is a `GeneratorReplica` Ray actor on a node with a `generator` resource; the
actor owns its vLLM process and its node's disk, and this pool talks to each server's URL for
sampling. Guarantees the loop relies on:

- A step's prompts go, one request each, to the replica with the fewest outstanding tokens
  (prompt + n x max_tokens), so a slow or busy replica gets less.
- A replica samples only the version every other replica serves: `apply` loads a version on
  all live replicas and checks each lists it; a replica that comes back from a restart loads
  the current version before it takes prompts again.
- A replica that fails (connection lost, 5xx after the client's retries) is restarted in the
  background (its actor restarts the server; a lost actor is replaced) while its prompts go
  to the others. Only when none is left does the step fail, into the run's recovery path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import ray

from orchestrator.run.runtime import cluster_has_gpus
from services.config import RunConfig
from services.generator.client import GeneratorClient
from services.generator.launcher import GeneratorError
from services.generator.replica import GeneratorReplica, LoadReport, ReplicaInfo
from services.schemas import AdapterRef, Completion, GenerateRequest

log = logging.getLogger("mathrl.pool")
CALL_TIMEOUT_S = 600.0


def pick_replica(outstanding: Sequence[int], up: Sequence[bool]) -> int:
    """The live replica with the fewest outstanding tokens (the lowest index on a tie)."""
    live = [i for i, ok in enumerate(up) if ok]
    if not live:
        raise GeneratorError("no generator replica is up")
    return min(live, key=lambda i: (outstanding[i], i))


def replica_fault(err: BaseException) -> bool:
    """A failure of the replica itself (not of the request): it is restarted."""
    if isinstance(err, httpx.TransportError):
        return True
    return isinstance(err, httpx.HTTPStatusError) and err.response.status_code >= 500


@dataclass
class Replica:
    index: int
    actor: object
    info: ReplicaInfo | None = None
    client: GeneratorClient | None = None
    up: bool = False
    version: int | None = None
    """The adapter version it serves (None: none of the current run's)."""
    restarting: object | None = None
    """The actor call restarting its server, while it is down."""
    down_since: float = 0.0
    restarts: int = 0
    outstanding: int = 0
    prompts: int = 0
    """Prompt requests it answered since the counter was last read."""
    sync_s: float = 0.0


@dataclass
class ReplicaPool:
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
    _files: object | None = None
    """The current version's files in the object store: read by the learner once, fetched by
    each replica (and by one that rejoins later)."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # ------------------------------------------------------------------ lifecycle
    def _spawn(self, index: int):
        gpu = 1 if cluster_has_gpus() else 0
        cls = ray.remote(num_cpus=0, num_gpus=gpu, resources={"generator": 1},
                         max_restarts=0)(GeneratorReplica)
        return cls.remote(self.cfg, index=index, model_path=self.model_path,
                          api_key=self.api_key)

    def start(self) -> ReplicaPool:
        n = self.cfg.generator.replicas
        self.replicas = [Replica(i, self._spawn(i)) for i in range(n)]
        infos = ray.get([r.actor.start.remote() for r in self.replicas],
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
        r.client = GeneratorClient(info.url, timeout_s=self.cfg.generator.request_timeout_s,
                                   api_key=self.api_key)

    def stop(self) -> None:
        for r in self.replicas:
            try:
                ray.get(r.actor.stop.remote(), timeout=60)
            except Exception:  # noqa: BLE001 - a lost actor took its server with it
                pass
            ray.kill(r.actor, no_restart=True)
            if r.client is not None:
                r.client.close()

    def note(self, text: str) -> None:
        log.warning(text)
        self.events.append(text)

    # ------------------------------------------------------------------ faults
    def mark_down(self, r: Replica, err: BaseException | str) -> None:
        """Take a live replica out and restart it (once, however many requests saw it fail)."""
        with self._lock:
            if not r.up:
                return
            r.up = False
        self._down(r, err)

    def _down(self, r: Replica, err: BaseException | str) -> None:
        r.version, r.down_since, r.sync_s = None, time.monotonic(), 0.0
        # `err`: the failure, or (a string) why it is restarted on purpose.
        what = err if isinstance(err, str) else \
            f"failed ({type(err).__name__}: {str(err)[:160]})"
        others = [x.index for x in self.replicas if x.up]
        self.note(f"generator replica {r.index} ({r.info.url}) {what}; restarting it, its "
                  f"prompts go to replica(s) {others}")
        self._restart(r)

    def _restart(self, r: Replica) -> None:
        r.restarts += 1
        r.restarting = r.actor.restart.remote()

    def _finish_restart(self, r: Replica, timeout: float | None) -> bool:
        """Collect a restart that is done (or wait `timeout`); True once its server answers.
        A lost actor (its node died) is replaced by a new one, placed by Ray again."""
        ready, _ = ray.wait([r.restarting], timeout=timeout)
        if not ready:
            return False
        try:
            info = ray.get(r.restarting)
        except ray.exceptions.RayActorError:
            r.actor = self._spawn(r.index)
            r.restarting = r.actor.start.remote()
            return self._finish_restart(r, timeout)
        except Exception as e:  # noqa: BLE001 - the server did not start: try again, bounded
            if r.restarts > self.cfg.generator.max_restarts:
                r.restarting = None
                self.note(f"generator replica {r.index} did not come back ({e}); it stays down")
                return False
            self._restart(r)
            return False
        r.restarting = None
        self._connect(r, info)
        return True

    def rejoin(self) -> None:
        """Between requests: a replica whose restart finished loads the current version, and
        only then takes prompts again."""
        for r in self.replicas:
            if not r.up and r.restarting is not None and self._finish_restart(r, timeout=0):
                self._readmit(r)

    def _readmit(self, r: Replica) -> None:
        if self.current is not None:
            try:
                self._check(r, ray.get(self._load(r), timeout=CALL_TIMEOUT_S))
            except Exception as e:  # noqa: BLE001 - it goes down again and is retried
                self._down(r, e)
                return
        r.up = True
        self.note(f"generator replica {r.index} is back after "
                  f"{time.monotonic() - r.down_since:.1f} s, serving "
                  f"{f'version {r.version}' if self.current else 'the base model'}")

    def recover(self) -> str:
        """The run's recovery path (no replica was left): restart every down replica and wait.
        The caller then serves the restored version on all of them."""
        for r in self.replicas:
            if r.restarting is None and not r.up:
                self._restart(r)
        for r in self.replicas:
            if r.restarting is not None and self._finish_restart(
                    r, timeout=self.cfg.generator.startup_timeout_s + 60):
                r.up, r.version = True, None
        if not any(r.up for r in self.replicas):
            raise GeneratorError("no generator replica could be restarted")
        return f"generator replicas restarted ({sum(r.up for r in self.replicas)} up)"

    def recycle(self, bound_bytes: int, step: int) -> bool:
        """Restart (in the background) each live replica whose memory passed the bound."""
        held = ray.get([r.actor.memory.remote() for r in self.replicas if r.up],
                       timeout=CALL_TIMEOUT_S)
        done = False
        for r, pss in zip([r for r in self.replicas if r.up], held, strict=True):
            if pss is None or pss <= bound_bytes:
                continue
            alone = sum(x.up for x in self.replicas) == 1
            self.mark_down(r, f"recycled after step {step}: it held {pss / 2**30:.2f} GiB, "
                              f"bound {bound_bytes / 2**30:g} GiB")
            # Alone, nobody samples meanwhile: wait for it, then serve the version again.
            if alone and self._finish_restart(
                    r, timeout=self.cfg.generator.startup_timeout_s + 60):
                self._readmit(r)
            done = True
        return done

    def memory(self) -> int | None:
        held = [m for m in ray.get([r.actor.memory.remote() for r in self.replicas if r.up],
                                   timeout=CALL_TIMEOUT_S) if m is not None]
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
        """Serve `ref` on every live replica, checked; a replica that fails to is restarted
        (and loads it when it is back). Raises only when no replica serves it."""
        self.current = (run_name, alias, ref)
        ray_transport = self.cfg.generator.adapter_transport == "ray"
        self._files = self.files_of(ref) if ray_transport else None
        live = [r for r in self.replicas if r.up]
        calls = [self._load(r) for r in live]
        for r, call in zip(live, calls, strict=True):
            try:
                self._check(r, ray.get(call, timeout=CALL_TIMEOUT_S))
            except Exception as e:  # noqa: BLE001 - the replica, not the version, is at fault
                self.mark_down(r, e)
        if not any(r.up for r in self.replicas):
            raise GeneratorError(f"no generator replica serves version {ref.version}")

    def forget_versions(self) -> None:
        self.current = self._files = None
        for r in self.replicas:
            r.version = None

    def new_run(self) -> None:
        """A run starts: no version of it is served yet, and each replica gets
        `generator.max_restarts` again (a budget per run, as for one server)."""
        self.forget_versions()
        self.events.clear()
        for r in self.replicas:
            r.restarts = 0

    def release(self) -> None:
        """Unload the run's adapters from every live replica (best effort, at run end)."""
        for r in self.replicas:
            if r.up:
                try:
                    ray.get(r.actor.release.remote(), timeout=60)
                except Exception:  # noqa: BLE001 - the server may be gone
                    pass
        self.forget_versions()

    # ------------------------------------------------------------------ the client interface
    @property
    def base_url(self) -> str:
        return next((r.info.url for r in self.replicas if r.up), self.replicas[0].info.url)

    def models(self) -> list[str]:
        return next(r.client for r in self.replicas if r.up).models() if self.up() else []

    def up(self) -> bool:
        return any(r.up for r in self.replicas)

    def take_counts(self) -> dict[int, int]:
        """Prompt requests each replica answered since the last call."""
        with self._lock:
            out = {r.index: r.prompts for r in self.replicas}
            for r in self.replicas:
                r.prompts = 0
        return out

    def generate(self, req: GenerateRequest) -> list[list[Completion]]:
        self.rejoin()
        want = self.current[2].version if self.current else None
        for r in self.replicas:
            if r.up and want is not None and r.version != want:
                raise GeneratorError(f"replica {r.index} serves version {r.version}, "
                                     f"not {want}")
        workers = max(1, min(64, len(req.prompts)))
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(lambda i: self._one(req, i), range(len(req.prompts))))

    def _one(self, req: GenerateRequest, i: int) -> list[Completion]:
        cost = len(req.prompts[i]) + req.n * req.max_tokens
        while True:
            with self._lock:
                r = self.replicas[pick_replica([x.outstanding for x in self.replicas],
                                               [x.up for x in self.replicas])]
                r.outstanding += cost
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
            with self._lock:
                r.prompts += 1
            return out

    def sleep(self, level: int = 1) -> None:
        for r in self.replicas:
            if r.up:
                r.client.sleep(level)

    def wake_up(self) -> None:
        for r in self.replicas:
            if r.up:
                r.client.wake_up()

    def close(self) -> None:
        """Clients stay open until `stop` (the pool outlives a run)."""
