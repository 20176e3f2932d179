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
import shutil
import tempfile
import time
from collections import deque
from pathlib import Path

import httpx
from pydantic import BaseModel

from services.adapter_files import write_adapter
from services.config import RunConfig
from services.generator.client import GeneratorClient
from services.generator.launcher import GeneratorError, VLLMServer, detect_device, launch

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
        self._local: deque[Path] = deque()

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
        """Stop the server's whole process group (dead or hung) and start it again."""
        if self.server is None:
            return self.start()
        self.server.stop(grace_s=10)
        self.server.start()
        self.server.wait_ready(self.cfg.generator.startup_timeout_s)
        return self.info()

    def memory(self) -> int | None:
        """PSS of the server's process group in bytes (None when it is not running)."""
        if self.server is None or self.server.proc is None or self.server.proc.poll() is not None:
            return None
        from services.generator.memory import process_group_pss

        return process_group_pss(self.server.proc.pid)

    def _client(self) -> GeneratorClient:
        return GeneratorClient(self.url, timeout_s=self.cfg.generator.request_timeout_s,
                               api_key=self.api_key)

    def load(self, name: str, alias: str, version: int, path: str,
             files: dict[str, bytes] | None = None, previous: str | None = None) -> LoadReport:
        """Serve version `version` under `name` and `alias` (in place), unload `previous`, and
        report what the server lists. With `files` (the adapter sent over Ray) they are first
        written under this node's folder and that copy is loaded; `path` is then only the
        learner's name for it."""
        t0 = time.perf_counter()
        if files is not None:
            # Named as served (`<run>-v<version>`): a folder per version, as in `path` mode;
            # per replica, since several may share a node.
            path = str(write_adapter(files, self.dir / f"replica{self.index}" / name))
        with self._client() as client:
            client.load_adapter(name, path, inplace=True)
            client.load_adapter(alias, path, inplace=True)
            if previous is not None and previous != name:
                try:
                    client.unload_adapter(previous)
                except httpx.HTTPStatusError as e:
                    if e.response.status_code != 404:  # a restarted server no longer has it
                        raise
            models = client.models()
        if files is not None:
            self._retire(Path(path))
        return LoadReport(name=name, version=version, path=path, models=models,
                          seconds=time.perf_counter() - t0)

    def _retire(self, path: Path) -> None:
        """Node-local copies older than the last `keep` served ones are deleted (vLLM has
        unloaded them by now: the alias points at the newest)."""
        if path not in self._local:
            self._local.append(path)
        while len(self._local) > self.keep:
            shutil.rmtree(self._local.popleft(), ignore_errors=True)  # only folders we wrote

    def unload(self, names: list[str]) -> None:
        """Best effort (shutdown, or the next run starting from the base)."""
        try:
            with self._client() as client:
                for name in names:
                    try:
                        client.unload_adapter(name)
                    except httpx.HTTPError:
                        pass
        except Exception:  # noqa: BLE001 - the server may be gone
            pass

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


__all__ = ["GeneratorError", "GeneratorReplica", "LoadReport", "ReplicaInfo"]
