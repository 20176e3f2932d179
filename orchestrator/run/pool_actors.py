"""The pool's calls into Ray, in one place: placing a replica actor, waiting on and reading its
answers, killing it. The pool's fault handling is tested by replacing this object with fakes
(tests/test_pool_faults.py), without Ray or vLLM."""

from __future__ import annotations

import ray

from orchestrator.run.runtime import cluster_has_gpus
from services.config import RunConfig
from services.generator.replica import GeneratorReplica


class RayCalls:
    def spawn(self, cfg: RunConfig, *, index: int, model_path: str, api_key: str | None):
        """A replica actor on a node with a free `generator` resource (and a card of its own
        where the cluster has GPUs); not restarted by Ray: the pool replaces a lost one."""
        gpu = 1 if cluster_has_gpus() else 0
        cls = ray.remote(num_cpus=0, num_gpus=gpu, resources={"generator": 1},
                         max_restarts=0)(GeneratorReplica)
        return cls.remote(cfg, index=index, model_path=model_path, api_key=api_key)

    def get(self, ref, timeout: float | None):
        return ray.get(ref, timeout=timeout)

    def wait(self, refs: list, timeout: float | None, fetch_local: bool = True):
        return ray.wait(refs, num_returns=len(refs), timeout=timeout, fetch_local=fetch_local)

    def kill(self, actor) -> None:
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
