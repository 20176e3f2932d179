"""Bring up (and down) the processes a run needs: vLLM server, Ray, learner actor."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import ray

from orchestrator.run import runtime
from orchestrator.run.evaluate import training_problems
from orchestrator.run.loop import GRPOLoop, MetricsSink
from orchestrator.run.pool import ReplicaPool
from orchestrator.run.pool_sync import PoolSync
from orchestrator.run.rollout import PromptCache, Scorer
from services.config import RunConfig
from services.generator.client import GeneratorClient
from services.generator.launcher import GeneratorError, VLLMServer, detect_device, launch
from services.generator.sync import PolicySync
from services.learner.model import torch_dtype


def resolve_model_path(name_or_path: str) -> str:
    """A local directory as is; a hub id is fetched into the Hugging Face cache (the
    learner and, in merged mode, the served copy need files on disk)."""
    if os.path.isdir(name_or_path):
        return str(Path(name_or_path).resolve())
    from huggingface_hub import snapshot_download

    return snapshot_download(name_or_path)


def placement_problem(nodes: list[dict[str, float]], *, replicas: int, gpus_per_replica: float,
                      learner_gpus: float) -> str | None:
    """Why Ray could never place `replicas` generator actors (each a `generator` slot and
    `gpus_per_replica` GPUs on one node) beside a learner holding `learner_gpus` GPUs on its
    `learner` node, given every node's total resources; None when it can. Ray would otherwise
    wait (`--generators 2` on a one-GPU machine: 660 s, then GetTimeoutError). A learner
    without a GPU is not checked: its node may join later (compose starts it last)."""
    def fits(node: dict[str, float], gpus_taken: float) -> int:
        n = int(node.get("generator", 0))
        if gpus_per_replica > 0:
            n = min(n, int((node.get("GPU", 0) - gpus_taken) // gpus_per_replica))
        return max(n, 0)

    hosts = [i for i, n in enumerate(nodes)
             if n.get("learner", 0) >= 1 and n.get("GPU", 0) >= learner_gpus]
    if learner_gpus > 0 and not hosts:
        return (f"the Ray cluster lacks a node with the `learner` resource and {learner_gpus:g} "
                f"GPU(s) for the learner beside {replicas} generator replica(s)")
    # Replicas are alike, so a node's share is what its slots and GPUs allow; try the learner
    # on each node that may host it.
    placed = max(sum(fits(n, learner_gpus if j == i else 0) for j, n in enumerate(nodes))
                 for i in (hosts if learner_gpus > 0 else [-1]))
    if placed >= replicas:
        return None
    slots = sum(n.get("generator", 0) for n in nodes)
    gpus = sum(n.get("GPU", 0) for n in nodes)
    need = replicas * gpus_per_replica + learner_gpus
    lacks = []
    if slots < replicas:
        lacks.append(f"{replicas - slots:g} `generator` slot(s) (it has {slots:g})")
    if gpus < need:
        lacks.append(f"{need - gpus:g} GPU(s) (it has {gpus:g}; each replica takes "
                     f"{gpus_per_replica:g} and the learner {learner_gpus:g})")
    what = "; ".join(lacks) or ("a node with a `generator` slot and a free GPU together for "
                                f"{replicas - placed} of them")
    return (f"cannot place {replicas} generator replicas: the Ray cluster lacks {what}; "
            "start fewer (--generators) or add nodes")


@dataclass
class Stack:
    """A generator process plus Ray; one per machine (one GPU), shared by successive runs."""

    cfg: RunConfig
    work_dir: Path
    model_path: str = ""
    generator_model_path: str = ""
    server: VLLMServer | None = None
    client: GeneratorClient | None = None
    owns_ray: bool = False
    ray_address: str | None = None
    ray_log_to_driver: bool = True
    """Stream the Ray workers' (learner's) output to this console; else it stays in Ray's
    session logs (`ray_logs`)."""
    ray_logs: str | None = None
    """Ray's session log folder (the learner's stdout/stderr), once Ray is started here."""
    pool: ReplicaPool | None = None
    """The Ray-placed replicas (`generator.replicas > 1` or adapters over Ray); then `client`
    is the pool itself."""
    api_key: str | None = None
    """Bearer key of the generator's `/v1` routes (the API token): given to the vLLM we launch
    (`VLLM_API_KEY`) and sent by our client, to ours or to one at `generator.url`."""
    _closers: list = field(default_factory=list)

    def start(self) -> Stack:
        self.work_dir = Path(self.work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.model_path = resolve_model_path(self.cfg.model.name_or_path)
        self.generator_model_path = self.model_path
        device = detect_device()
        if self.cfg.generator.sync_mode == "merged":
            from services.learner.export import prepare_served_model

            served = self.work_dir / "served-model"
            prepare_served_model(self.model_path, served, torch_dtype(self.cfg.model, device))
            self.generator_model_path = str(served.resolve())
        gen = self.cfg.generator
        if gen.pooled:
            # The replicas are Ray actors: Ray first (a local head offers `replicas` slots).
            self._start_ray(generators=gen.replicas)
            self._check_placement(gen.replicas)
            self.pool = ReplicaPool(self.cfg, self.generator_model_path, api_key=self.api_key)
            self.client = self.pool.start()
            return self
        if gen.url:
            url = gen.url
        else:
            self.server = launch(self.cfg, model_path=self.generator_model_path,
                                 log_path=self.work_dir / "logs" / "generator.log",
                                 device=device, api_key=self.api_key)
            url = self.server.url
        self.client = GeneratorClient(url, timeout_s=gen.request_timeout_s,
                                      api_key=self.api_key)
        self._start_ray(generators=0)
        return self

    def served_max_model_len(self) -> int:
        """The served context length: the generator's own `/v1/models` word, else the
        config's (a pool, or a generator that does not answer now)."""
        try:
            n = self.client.max_model_len()
        except Exception:  # noqa: BLE001 - the config says what it was started with
            n = None
        return n or self.cfg.model.max_model_len

    @property
    def launches_generator(self) -> bool:
        """mathrl started the generator(s), so it can restart them."""
        return self.server is not None or self.pool is not None

    def _start_ray(self, *, generators: int) -> None:
        if not ray.is_initialized():
            self.ray_logs = runtime.start_ray(address=self.ray_address, generators=generators,
                                              log_to_driver=self.ray_log_to_driver)
            self.owns_ray = True

    def _check_placement(self, replicas: int) -> None:
        """Refuse, before any replica is asked for, a pool Ray cannot place (one line naming
        what the cluster lacks). The GPUs asked for are the pool's and the learner's own
        (pool_actors.RayCalls.spawn, prepare_run): a card each where the cluster has GPUs."""
        gpus = 1 if runtime.cluster_has_gpus() else 0
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        problem = placement_problem(nodes, replicas=replicas, gpus_per_replica=gpus,
                                    learner_gpus=gpus)
        if problem is not None:
            if self.owns_ray:
                runtime.stop_ray()
                self.owns_ray = False
            raise GeneratorError(problem)

    def generator_events(self) -> list[str]:
        """Notes the replica pool has for the active run (drained)."""
        out = []
        while self.pool is not None and self.pool.events:
            out.append(self.pool.events.popleft())
        return out

    def generator_up(self) -> bool:
        """The generator answers (and, when we launched it, its process lives); a pool: one
        replica at least."""
        if self.pool is not None:
            return self.pool.up()
        if self.server is not None and self.server.proc is not None \
                and self.server.proc.poll() is not None:
            return False
        try:
            return bool(self.client and self.client.models())
        except Exception:  # noqa: BLE001 - any failure to answer is "down"
            return False

    def generator_memory(self) -> int | None:
        """PSS of the generator we launched (its whole process group), bytes; None for one at
        `generator.url` or one not running; a pool: its largest replica."""
        if self.pool is not None:
            return self.pool.memory()
        if self.server is None or self.server.proc is None or self.server.proc.poll() is not None:
            return None
        from services.generator.memory import process_group_pss

        return process_group_pss(self.server.proc.pid)

    def recover_generator(self) -> str:
        """Bring a dead or hung generator back: restart the one we launched (its whole process
        group is stopped first), or wait, bounded, for one at `generator.url` (compose restarts
        it). Returns what was done; raises GeneratorError if it does not come back."""
        gen = self.cfg.generator
        if self.pool is not None:
            return self.pool.recover()
        if self.server is not None:
            self.server.restart(gen.startup_timeout_s)
            return f"generator restarted (pid {self.server.proc.pid})"
        deadline = time.monotonic() + gen.restart_wait_s
        while time.monotonic() < deadline:
            if self.generator_up():
                return "generator answered again"
            time.sleep(2.0)
        raise GeneratorError(f"the generator at {gen.url} did not answer within "
                             f"{gen.restart_wait_s:.0f} s")

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.server is not None:
            self.server.stop()
        if self.pool is not None:
            self.pool.stop()
        if self.owns_ray:
            runtime.stop_ray()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass
class RunHandle:
    loop: GRPOLoop
    learner: object
    scorer: Scorer
    sync: PolicySync | PoolSync
    spawn_learner: Callable[[], object] | None = None
    """Starts a fresh learner actor for this run (to replace a dead one)."""
    checkpoints: Path | None = None
    """Where this run's checkpoints live (`step-N` folders)."""

    def replace_learner(self) -> None:
        """Kill the current learner (dead, or hung past its timeout) and start another; the
        caller restores it from a checkpoint."""
        try:
            ray.kill(self.loop.learner, no_restart=True)
        except Exception:  # noqa: BLE001 - it is usually dead already
            pass
        self.learner = self.loop.learner = self.spawn_learner()

    def close(self) -> None:
        self.sync.release()
        self.scorer.close()
        ray.kill(self.loop.learner)


def prepare_run(stack: Stack, cfg: RunConfig, run_dir: Path,
                sinks: list[MetricsSink] | None = None, *, run_name: str | None = None
                ) -> RunHandle:
    """Spawn the learner for `cfg`, publish version 0, and return a loop ready to step.

    `run_name` prefixes the adapter names in vLLM (default: the config's name); the service
    passes a unique one so that runs sharing a config name never share adapter names."""
    from transformers import AutoTokenizer

    if Path(resolve_model_path(cfg.model.name_or_path)) != Path(stack.model_path):
        raise ValueError(
            f"the generator serves {stack.model_path}; this run asks for {cfg.model.name_or_path}"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(stack.model_path)
    problems = training_problems(cfg)  # without the eval questions (eval.hold_out)
    prompts = PromptCache.from_config(tokenizer, problems, cfg.data, seed=cfg.schedule.seed)
    served_dir = stack.generator_model_path if cfg.generator.sync_mode == "merged" else None
    # Replicas each hold a GPU through Ray; the learner then asks for one of its own.
    learner_gpus = 1 if stack.pool is not None and runtime.cluster_has_gpus() else 0
    def spawn():
        return runtime.spawn_learner(cfg, model_path=stack.model_path, run_dir=str(run_dir),
                                     served_model_dir=served_dir, num_gpus=learner_gpus)

    # The scorer first: resolving reward functions and starting their workers may fail, and
    # nothing that holds a GPU may exist yet when it does.
    scorer = Scorer(cfg.reward, tokenizer)
    try:
        learner = spawn()
    except BaseException:
        scorer.close()
        raise
    try:
        if stack.pool is not None:
            # The loop's learner, looked up at each use (a respawn replaces it; `loop` is
            # bound below, before the first version is served).
            sync = PoolSync(stack.pool, run_name=run_name or cfg.name,
                            alias=cfg.generator.alias, keep=cfg.generator.keep_adapters,
                            learner=lambda: loop.learner)
        else:
            sync = PolicySync(stack.client, mode=cfg.generator.sync_mode,
                              run_name=run_name or cfg.name, alias=cfg.generator.alias,
                              keep=cfg.generator.keep_adapters)
        loop = GRPOLoop(cfg, client=stack.client, learner=learner, sync=sync,
                        prompts=prompts, scorer=scorer, sinks=sinks)
        handle = RunHandle(loop, learner, scorer, sync, spawn_learner=spawn,
                           checkpoints=run_dir / "checkpoints")
    except BaseException:
        scorer.close()
        ray.kill(learner)
        raise
    try:
        loop.start()
    except BaseException:
        handle.close()
        raise
    return handle
