"""`mathrl up`: generator + Ray (with the learner) + the API and scheduler, in the foreground.

Ctrl-C or SIGTERM: uvicorn stops serving, the scheduler finishes the current step and
records why the run ended, then the generator (by its PID's process group) and Ray stop.
"""

from __future__ import annotations

import logging
import signal
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn

from orchestrator.run.logs import setup_logging, where
from orchestrator.run.stack import Stack
from orchestrator.service.api.app import Service, create_app
from orchestrator.service.api.auth import exposure_warning
from orchestrator.service.api.limits import ApiPolicy
from orchestrator.service.scheduler import Scheduler
from orchestrator.service.settings import InvalidFile, Settings
from orchestrator.service.store import RunStore
from services.config import RunConfig, load_config
from services.paths import model_problem

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny-cpu.toml"
TINY_MODEL = Path(".mathrl/tiny-model")
"""The offline tiny model DEFAULT_CONFIG names (tests/test_api_guard.py checks they agree).
A constant, not read from that file: an installed (non-editable) mathrl, as in the images, has
no configs/ beside its package, and `--config` must work there all the same."""


def stack_config(settings: Settings) -> RunConfig:
    cfg = load_config(settings.config or DEFAULT_CONFIG)
    model = cfg.model.name_or_path
    if Path(model) == TINY_MODEL and not Path(model).exists():
        # The offline tiny model of configs/tiny-cpu.toml (with or without --config): build it
        # on first use, so a fresh checkout's `mathrl up` works.
        from services.tinymodel import build_tiny_model

        build_tiny_model(model)
    elif (problem := model_problem(model)) is not None:
        # A missing local path is said here, not sent to the Hub as an id.
        raise InvalidFile(f"{settings.config}: model.name_or_path: {problem}")
    update = {}
    if settings.generator_url:
        update["url"] = settings.generator_url
    if settings.generators is not None:
        update["replicas"] = settings.generators
    if update:
        # Validated again: a URL and replicas, or merged sync and replicas, are refused here.
        cfg = RunConfig.model_validate({**cfg.model_dump(), "generator": {
            **cfg.generator.model_dump(), **update}})
    return cfg


log = logging.getLogger("mathrl.server")


def serve(settings: Settings, *, on_ready=None) -> None:
    log_file = setup_logging(settings.work_dir / "logs" / "mathrl.log", settings.log_level)
    debug = settings.log_level == "debug"
    policy = ApiPolicy.from_settings(settings)
    if (warning := exposure_warning(settings.host, policy.token)) is not None:
        log.warning(warning)
    cfg = stack_config(settings)
    store = RunStore(settings.db)
    # The launched vLLM takes the API token as its key: its runtime LoRA endpoints are then
    # closed to other local users too.
    stack = Stack(cfg, settings.work_dir / "stack", ray_address=settings.ray_address,
                  ray_log_to_driver=debug, api_key=policy.token)
    log.info("starting the generator (%s) and Ray (log: %s)", cfg.model.name_or_path, log_file)

    @asynccontextmanager
    async def lifespan(app):
        stack.start()
        scheduler = Scheduler(store, stack, settings.work_dir,
                              resume_active=settings.resume_active,
                              reward_hosts=settings.reward_hosts)
        app.state.service = Service(scheduler=scheduler, stack=stack)
        scheduler.start()
        log.info(where(log_file, stack))
        if on_ready:
            on_ready()
        try:
            yield
        finally:
            scheduler.stop()
            stack.stop()
            store.close()

    app = create_app(store, lifespan=lifespan, policy=policy)
    # uvicorn re-raises the signal that stopped it once shutdown is done; with the default
    # SIGTERM disposition that would kill us with -15 after an orderly stop. A no-op handler
    # lets `mathrl up` exit 0 on SIGTERM (Ctrl-C exits 130, below).
    signal.signal(signal.SIGTERM, lambda *_: None)
    # log_config=None: uvicorn's records go through our handlers (access lines to the log
    # file; to the console only at debug) instead of loggers of its own.
    server = _Server(uvicorn.Config(app, host=settings.host, port=settings.port,
                                    log_config=None, log_level="info",
                                    timeout_graceful_shutdown=5))
    try:
        server.run()
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    if server.stopped_by == signal.SIGINT:
        # Ctrl-C: the shell convention (128 + SIGINT). uvicorn's re-raised SIGINT lands in
        # asyncio's own handler and is swallowed, so the exit code is set here.
        raise SystemExit(130)


class _Server(uvicorn.Server):
    """uvicorn's server, remembering which signal stopped it."""

    stopped_by: int | None = None

    def handle_exit(self, sig, frame) -> None:
        self.stopped_by = sig
        super().handle_exit(sig, frame)
