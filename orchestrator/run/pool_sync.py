"""Serve each new policy version on every generator replica (PolicySync's job for a pool).

Names and folders follow PolicySync (`<run>-v<version>` plus the stable alias, a folder per
version). The learner's `step-N` folders older than the last `keep` are deleted by the
learner, on its own node (this process may not see that disk); replicas that received copies
over Ray delete their own.
"""

from __future__ import annotations

from collections import deque

from orchestrator.run.pool import ReplicaPool
from services.generator.sync import past_keep
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
        # Each replica names it as PolicySync does (`versioned_name`), checked by the pool.
        self.pool.apply(self.run_name, self.alias, ref)
        self.served, self.version = self.versioned_name(ref.version), ref.version
        if old := past_keep(self._paths, ref.path, self.keep):
            self.learner().remove_adapters.remote(old)  # not awaited: nothing depends on it
        return self.served

    def metrics(self) -> dict[str, float]:
        """Per replica: seconds its last load took (the files' trip included over Ray), and
        the prompt requests it answered since the previous step (a prefetch included)."""
        out = {f"time/sync_replica{r.index}": r.sync_s for r in self.pool.replicas}
        out.update({f"generator/replica{i}_prompts": float(n)
                    for i, n in self.pool.take_counts().items()})
        return out

    def reset(self) -> None:
        """The replicas restarted: none serves a version of ours."""
        self.served = None
        self.pool.forget_versions()

    def release(self) -> None:
        self.pool.release()
        self.pool.files_of = None
        self.served = None
