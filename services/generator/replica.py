"""One vLLM server on one node, owned by a process on that node (the orchestrator runs this
class as a Ray actor with a `generator` resource).

The replica launches `vllm serve` as its child (the same argv and environment as a local
launch, on port `generator.port + index`), and does the server's adapter work on its own node:
an adapter sent as files (`adapter_transport = "ray"`; Ray moves them from the learner's node
through its object store) is written to this node's disk before vLLM loads it, so nodes need
no shared volume. Prompts do not pass through here: the orchestrator sends them to the
server's URL directly.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel

from services.adapter_files import write_adapter
from services.config import RunConfig
from services.generator.client import GeneratorClient
from services.generator.launcher import VLLMServer, detect_device, launch
from services.generator.sync import PolicySync
from services.schemas import AdapterRef

_WILDCARD_HOSTS = ("0.0.0.0", "::", "")


class ReplicaInfo(BaseModel):
    index: int
    url: str
    node_id: str
    node_dir: str
    pid: int
    """The server's process (group leader): its engine processes are in the same group."""


class LoadReport(BaseModel):
    name: str
    version: int
    path: str
    """The folder vLLM loaded (node-local when the files came over Ray)."""
    models: list[str]
    """What the server lists after the load: the caller checks `name` is there."""
    seconds: float


def node_dir(configured: str | None, node_id: str) -> Path:
    """This node's own folder: the config's, else `$MATHRL_NODE_DIR` (set where the node's
    Ray processes start), else one under the system temp dir keyed by the Ray node id."""
    root = configured or os.environ.get("MATHRL_NODE_DIR")
    if root:
        return Path(root)
    return Path(tempfile.gettempdir()) / f"mathrl-node-{node_id[:12]}"


class GeneratorReplica:
    def __init__(self, cfg: RunConfig, *, index: int, model_path: str,
                 api_key: str | None = None):
        import ray

        gen = cfg.generator
        self.index = index
        self.node_id = ray.get_runtime_context().get_node_id()
        self.dir = node_dir(gen.node_dir, self.node_id)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keep = gen.keep_adapters
        host = gen.host
        # Bound to every interface: other nodes reach it at this node's address.
        advertised = ray.util.get_node_ip_address() if host in _WILDCARD_HOSTS else host
        self.cfg = cfg.model_copy(update={"generator": gen.model_copy(
            update={"port": gen.port + index})})
        self.model_path, self.api_key = model_path, api_key
        self.server: VLLMServer | None = None
        self.url = f"http://{advertised}:{gen.port + index}"
        self.client = GeneratorClient(self.url, timeout_s=gen.request_timeout_s,
                                      api_key=api_key)
        """The server's client (its URL stays the same across restarts)."""
        self._sync: PolicySync | None = None

    def start(self) -> ReplicaInfo:
        """Launch the server and wait until it answers (GeneratorError with its log tail)."""
        self.server = launch(self.cfg, model_path=self.model_path, device=detect_device(),
                             log_path=self.dir / "logs" / f"generator-r{self.index}.log",
                             api_key=self.api_key)
        return self.info()

    def info(self) -> ReplicaInfo:
        return ReplicaInfo(index=self.index, url=self.url, node_id=self.node_id,
                           node_dir=str(self.dir), pid=self.server.proc.pid if self.server
                           and self.server.proc else -1)

    def restart(self) -> ReplicaInfo:
        """Stop the server's whole process group (dead or hung) and start it again; it then
        serves no adapter of ours."""
        if self.server is None:
            return self.start()
        self.server.restart(self.cfg.generator.startup_timeout_s)
        if self._sync is not None:
            self._sync.reset()
        return self.info()

    def memory(self) -> int | None:
        """PSS of the server's process group in bytes (None when it is not running)."""
        if self.server is None or self.server.proc is None or self.server.proc.poll() is not None:
            return None
        from services.generator.memory import process_group_pss

        return process_group_pss(self.server.proc.pid)

    def load(self, run_name: str, alias: str, ref: AdapterRef,
             files: dict[str, bytes] | None = None) -> LoadReport:
        """Serve `ref` as PolicySync does for one server (its own name and the alias, the
        previous name unloaded) and report what the server then lists. With `files` (the
        adapter sent over Ray) they are first written under this node's folder, per replica
        since several may share a node, and that copy is loaded (the newest `keep` kept)."""
        t0 = time.perf_counter()
        if files is not None:
            dest = self.dir / f"replica{self.index}" / run_name / f"step-{ref.version}"
            ref = ref.model_copy(update={"path": str(write_adapter(files, dest))})
        if self._sync is None or self._sync.run_name != run_name:
            # Folders of the learner's (`path` transport) are the learner's to delete.
            self._sync = PolicySync(self.client, mode="lora", run_name=run_name, alias=alias,
                                    keep=self.keep if files is not None else None)
        name = self._sync.apply(ref)
        return LoadReport(name=name, version=ref.version, path=ref.path,
                          models=self.client.models(), seconds=time.perf_counter() - t0)

    def release(self) -> None:
        """Unload the run's adapters (best effort: the next run starts from the base)."""
        if self._sync is not None:
            self._sync.release()
            self._sync = None

    def stop(self) -> None:
        self.client.close()
        if self.server is not None:
            self.server.stop()

