"""Ray on this machine: loopback only, no dashboard, bounded CPUs, a `learner` resource."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading

import ray

from services.config import RunConfig

_TEMP_DIRS: list[str] = []
"""Temp folders of the local Ray heads this process started."""


def start_ray(*, num_cpus: int | None = None, address: str | None = None,
              generators: int = 0, log_to_driver: bool = True) -> str | None:
    """Join `address` (a cluster whose learner node carries the `learner` resource, as in the
    compose setup) or start a local head that carries it itself. `log_to_driver=False` leaves
    the workers' output in Ray's session logs instead of this process's console. Returns
    the folder of those logs (None when Ray was already up). `generators`: slots of the
    `generator` resource a local head offers (the Ray-placed vLLM replicas); a cluster's nodes
    declare their own (`ray start --resources '{"generator": 1}'`)."""
    if ray.is_initialized():
        return None
    # ray.init installs SIGTERM/SIGINT handlers that abort the driver; keep the host's
    # (uvicorn's graceful shutdown, or the default KeyboardInterrupt) so that a SIGTERM stops
    # the scheduler, the generator and Ray in order.
    saved = _signal_handlers()
    try:
        ctx = _init(num_cpus=num_cpus, address=address, generators=generators,
                    log_to_driver=log_to_driver)
    finally:
        _restore(saved)
    session = ctx.address_info.get("session_dir")
    return os.path.join(session, "logs") if session else None


def _signal_handlers() -> dict:
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}


def _restore(saved: dict) -> None:
    for sig, handler in saved.items():
        if handler is not None:
            signal.signal(sig, handler)


def _init(*, num_cpus: int | None, address: str | None, generators: int,
          log_to_driver: bool):
    if address:
        return ray.init(address=address, include_dashboard=False, log_to_driver=log_to_driver)
    # A short private temp dir: Ray's unix socket paths must stay under ~107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="mathrl-ray-", dir="/tmp")
    _TEMP_DIRS.append(temp_dir)
    return ray.init(
        num_cpus=num_cpus or min(os.cpu_count() or 1, 4),
        resources={"learner": 1, **({"generator": generators} if generators else {})},
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=temp_dir,
        log_to_driver=log_to_driver,
        configure_logging=False,
    )


def cluster_has_gpus() -> bool:
    """Whether any node of the Ray cluster offers a GPU (the driver's own machine may not)."""
    return ray.cluster_resources().get("GPU", 0) > 0


def stop_ray() -> None:
    if ray.is_initialized():
        ray.shutdown()
    # The session folders (logs, sockets) of the Ray we started: gone with it.
    while _TEMP_DIRS:
        shutil.rmtree(_TEMP_DIRS.pop(), ignore_errors=True)


def spawn_learner(cfg: RunConfig, *, model_path: str, run_dir: str,
                  served_model_dir: str | None = None, num_gpus: int = 0):
    """The learner as a Ray actor on the node that carries the `learner` resource.

    num_cpus=0: a 2-core machine would otherwise have its CPUs held by an actor that spends
    most of its time waiting, starving the tasks Ray schedules next to it; the learner sets
    its own torch thread count. `num_gpus=1` (a replica pool on CUDA): a card of its own,
    which Ray then keeps from the replicas; by default the learner shares the one card."""
    from services.learner.learner import Learner

    actor_cls = ray.remote(num_cpus=0, num_gpus=num_gpus, resources={"learner": 1},
                           max_restarts=0)(Learner)
    return actor_cls.remote(cfg, model_path=model_path, run_dir=run_dir,
                            served_model_dir=served_model_dir)
