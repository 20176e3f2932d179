"""One vLLM server on one node, owned by a process on that node (the orchestrator runs this
class as a Ray actor with a `generator` resource).

The replica launches `vllm serve` as its child (the same argv and environment as a local
launch, on port `generator.port + index`), and does the server's adapter work on its own node:
an adapter sent as files (`adapter_transport = "ray"`; Ray moves them from the learner's node
through its object store) is written to this node's disk before vLLM loads it, so nodes need
no shared volume. Prompts do not pass through here: the orchestrator sends them to the
server's URL directly.

Node-local copies live in a folder of this actor's own (`<node dir>/replica<i>-<random>/<run>/`),
held by a lock on its `.owner` file for as long as the actor's process lives. They are pruned
by what the folder holds (not by a list that dies with the actor), deleted when the run ends
(`release`) or the actor stops, and a folder whose owner died without either is deleted by the
next replica started on the node, which finds its lock free.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel

from services.adapter_files import STEP_DIR, AdapterPathError, write_adapter
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


def node_dir(configured: str | None) -> Path:
    """This node's own folder: the config's, else `$MATHRL_NODE_DIR` (set where the node's
    Ray processes start), else one per user under the system temp dir. The same folder in every
    Ray session, so that what a crashed replica left there is found and deleted later (a
    folder per Ray session was never cleaned)."""
    root = configured or os.environ.get("MATHRL_NODE_DIR")
    if root:
        return Path(root)
    return Path(tempfile.gettempdir()) / f"mathrl-node-{os.getuid()}"


_OWNED = re.compile(r"^replica\d+-")
_OWNER = ".owner"


def claim_folder(root: Path, index: int) -> tuple[Path, int]:
    """A new folder of this process's own under `root` and the descriptor holding its lock
    (released by the kernel when the process dies, however it dies)."""
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"replica{index}-", dir=root))
    fd = os.open(folder / _OWNER, os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return folder, fd


def remove_orphans(root: Path) -> list[Path]:
    """Delete the replica folders under `root` whose owner is gone (their lock is free); the
    folders of live replicas, of this or of another service sharing the node, stay. A folder
    without its `.owner` yet is one being created right now: left alone."""
    removed = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not _OWNED.match(folder.name) or not folder.is_dir():
            continue
        try:
            fd = os.open(folder / _OWNER, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        except BlockingIOError:
            pass  # its replica is alive
        finally:
            os.close(fd)
    return removed


def prune_copies(run_dir: Path, keep: int | None, current: Path) -> list[Path]:
    """Delete all but the `keep` most recently written adapter copies in `run_dir` (`current`,
    the one just loaded, always stays). By write time, not by version: after a checkpoint
    restore the versions served go back, and the newest copies are the ones that count."""
    if keep is None or not run_dir.is_dir():
        return []
    copies = sorted((p for p in run_dir.iterdir() if STEP_DIR.match(p.name) and p.is_dir()),
                    key=lambda p: p.stat().st_mtime_ns, reverse=True)
    old = [p for p in copies[keep:] if p != current]
    for p in old:
        shutil.rmtree(p, ignore_errors=True)
    return old


class GeneratorReplica:
    def __init__(self, cfg: RunConfig, *, index: int, model_path: str,
                 api_key: str | None = None):
        import ray

        gen = cfg.generator
        self.index = index
        self.node_id = ray.get_runtime_context().get_node_id()
        self.dir = node_dir(gen.node_dir)
        remove_orphans(self.dir)  # left by replicas whose process died (a lost actor)
        self.work, self._lock_fd = claim_folder(self.dir, index)
        """This actor's own folder: adapter copies, one subfolder per run."""
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
        adapter sent over Ray) they are first written under this actor's folder (several
        replicas may share a node), under the learner's folder name (a redone version's is new:
        sync.py), and that copy is loaded; the newest `keep` copies stay."""
        t0 = time.perf_counter()
        if run_name in (".", ".."):
            raise AdapterPathError(f"run name {run_name!r} cannot name a folder")
        if self._sync is None or self._sync.run_name != run_name:
            self._remove_runs()  # a previous run's copies whose release never came
            # Folders of the learner's (`path` transport) are the learner's to delete, and
            # copies are pruned below by what the folder holds: PolicySync deletes nothing.
            self._sync = PolicySync(self.client, mode="lora", run_name=run_name, alias=alias)
        if files is not None:
            name = Path(ref.path).name
            dest = self.work / run_name / (name if STEP_DIR.match(name)
                                           else f"step-{ref.version}")
            write_adapter(files, dest)
            # Its write time orders the copies (prune_copies), finer than the file system's
            # own stamps, which several quick writes may share.
            os.utime(dest, ns=(time.time_ns(), time.time_ns()))
            ref = ref.model_copy(update={"path": str(dest)})
        name = self._sync.apply(ref)
        if files is not None:
            prune_copies(dest.parent, self.keep, dest)  # after the switch: none is served
        return LoadReport(name=name, version=ref.version, path=ref.path,
                          models=self.client.models(), seconds=time.perf_counter() - t0)

    def release(self) -> None:
        """Unload the run's adapters (best effort: the next run starts from the base) and
        delete its copies."""
        if self._sync is not None:
            self._sync.release()
            self._sync = None
        self._remove_runs()

    def _remove_runs(self) -> None:
        for d in self.work.iterdir():
            if d.is_dir():
                shutil.rmtree(d, ignore_errors=True)

    def stop(self) -> None:
        self.client.close()
        if self.server is not None:
            self.server.stop()
        shutil.rmtree(self.work, ignore_errors=True)
        os.close(self._lock_fd)

