"""Serve each new policy version on every generator replica (PolicySync's job for a pool).

Names and folders follow PolicySync (`<run>-v<version>` plus the stable alias, a folder per
version). The learner's `step-N` folders older than the last `keep` are deleted by the
learner, on its own node (this process may not see that disk); replicas that received copies
over Ray delete their own.
"""

from __future__ import annotations

from collections import deque

from orchestrator.run.pool import ReplicaPool
from services.schemas import AdapterRef


class PoolSync:
    def __init__(self, pool: ReplicaPool, *, run_name: str, alias: str, keep: int | None,
                 learner):
        self.pool, self.run_name, self.alias, self.keep = pool, run_name, alias, keep
        self.learner = learner
        """A callable returning the run's current learner actor (it changes on respawn)."""
        self.served: str | None = None
        self.version: int | None = None
        self._paths: deque[str] = deque()
        pool.new_run()
        pool.files_of = lambda ref: self.learner().adapter_files.remote(ref.path)

    def versioned_name(self, version: int) -> str:
        return f"{self.run_name}-v{version}"

    def apply(self, ref: AdapterRef) -> str:
        if ref.kind != "lora":
            raise ValueError(f"a replica pool serves LoRA adapters, not {ref.kind!r}")
        name = self.versioned_name(ref.version)
        self.pool.apply(name, self.alias, ref, self.served)
        self.served, self.version = name, ref.version
        self._retire(ref.path)
        return name

    def _retire(self, path: str) -> None:
        if path not in self._paths:
            self._paths.append(path)
        old = []
        while self.keep is not None and len(self._paths) > self.keep:
            old.append(self._paths.popleft())
        if old:
            self.learner().remove_adapters.remote(old)  # not awaited: nothing depends on it

    def metrics(self) -> dict[str, float]:
        """Per replica: seconds its last load took (the files' trip included over Ray)."""
        return {f"time/sync_replica{r.index}": r.sync_s for r in self.pool.replicas}

    def reset(self) -> None:
        """The replicas restarted: none serves a version of ours."""
        self.served = None
        self.pool.forget_versions()

    def release(self) -> None:
        self.pool.release([n for n in (self.served, self.alias) if n])
        self.pool.forget_versions()
        self.pool.files_of = None
        self.served = None
