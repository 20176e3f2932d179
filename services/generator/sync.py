"""Make the generator serve the learner's latest policy version.

`lora` mode: every version lives in its own directory (`adapters/<run>/step-N`) and is
loaded under its own name, because vLLM keys its prefix cache on (adapter name, path):
reusing both would serve stale KV blocks for long prompts. The previous version is then
unloaded, and the stable alias is re-pointed at the new directory (`load_inplace`).

A version redone after a checkpoint restore (a learner fault, `checkpoint_every > 1`, a
resumed run) has the same number and name as the one it replaces but other weights, and samples
the same prompts (the order is restored): the learner publishes it in a new folder
(`step-N.r<tag>`, a tag per restore), so that neither its name nor the alias, both keyed with
the path, reuses blocks computed with the discarded weights, in this generator or in one that
outlived an orchestrator.

`merged` mode: the learner has overwritten the served model's weights on disk; vLLM
re-reads them (`reload_weights`) and its prefix cache is reset.
"""

from __future__ import annotations

import shutil
from collections import deque
from pathlib import Path

import httpx

from services.adapter_files import STEP_DIR
from services.generator.client import GeneratorClient
from services.schemas import AdapterRef


def past_keep(served: deque[str], path: str, keep: int | None) -> list[str]:
    """Record `path` as served (oldest first in `served`) and pop the ones older than the
    last `keep`: the folders no generator needs any more (None: keep all)."""
    if path not in served:
        served.append(path)
    old = []
    while keep is not None and len(served) > keep:
        old.append(served.popleft())
    return old


class PolicySync:
    def __init__(self, client: GeneratorClient, *, mode: str, run_name: str, alias: str,
                 keep: int | None = None):
        self.client = client
        self.keep = keep
        """Served adapter folders kept on disk (None: all)."""
        self._served_paths: deque[str] = deque()
        self.mode = mode
        self.run_name = run_name
        self.alias = alias
        self.served: str | None = None
        """Model name to sample the current policy from."""
        self.version: int | None = None
        self._alias_loaded = False

    def versioned_name(self, version: int) -> str:
        return f"{self.run_name}-v{version}"

    def apply(self, ref: AdapterRef) -> str:
        """Serve `ref`; returns the model name to sample from."""
        if self.mode == "merged":
            if ref.kind != "merged":
                raise ValueError(f"merged sync got a {ref.kind!r} artifact")
            self.client.reload_weights()
            self.served, self.version = self.alias, ref.version
            return self.served
        if ref.kind != "lora":
            raise ValueError(f"lora sync got a {ref.kind!r} artifact")
        name = self.versioned_name(ref.version)
        # In place: the name may already be there (a version restored from a checkpoint, or an
        # alias left by an earlier orchestrator process); vLLM loads a new name the same way.
        self.client.load_adapter(name, ref.path, inplace=True)
        self.client.load_adapter(self.alias, ref.path, inplace=True)
        self._alias_loaded = True
        previous = self.served
        self.served, self.version = name, ref.version
        if previous is not None and previous != name:
            self._unload(previous)
        self._retire(ref.path)
        return name

    def metrics(self) -> dict[str, float]:
        """Per-generator sync figures (a pool reports one per replica; one server has none
        beyond the step's `time/sync`)."""
        return {}

    def _unload(self, name: str) -> None:
        """A generator that restarted no longer has the name: that is not an error."""
        try:
            self.client.unload_adapter(name)
        except httpx.HTTPStatusError as e:
            if e.response.status_code != 404:
                raise

    def reset(self) -> None:
        """The generator restarted: it serves no adapter of ours any more."""
        self.served, self._alias_loaded = None, False

    def _retire(self, path: str) -> None:
        """Delete adapter folders older than the last `keep` served ones. Only after vLLM has
        unloaded them: the versioned name is gone and the alias points at the newest folder.
        Only `step-N` folders are ever deleted."""
        for old in map(Path, past_keep(self._served_paths, path, self.keep)):
            if STEP_DIR.match(old.name) and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)

    def release(self) -> None:
        """Unload this run's adapters (lora mode) so the next run starts from the base."""
        if self.mode != "lora":
            return
        for name in (self.served, self.alias if self._alias_loaded else None):
            if name is None:
                continue
            try:
                self.client.unload_adapter(name)
            except Exception:  # noqa: BLE001 - best effort on shutdown; the server may be gone
                pass
        self.served, self._alias_loaded = None, False
