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

from orchestrator.api.app import Service, create_app
from orchestrator.logs import setup_logging, where
from orchestrator.scheduler import Scheduler
from orchestrator.settings import Settings
from orchestrator.stack import Stack
from orchestrator.store import RunStore
from services.config import RunConfig, load_config

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny-cpu.toml"


def stack_config(settings: Settings) -> RunConfig:
    cfg = load_config(settings.config) if settings.config else load_config(DEFAULT_CONFIG)
    if settings.config is None and not Path(cfg.model.name_or_path).exists():
        # The default stack serves the offline tiny model: build it on first use.
        from services.tinymodel import build_tiny_model

        build_tiny_model(cfg.model.name_or_path)
    if settings.generator_url:
        cfg = cfg.model_copy(update={"generator": cfg.generator.model_copy(
            update={"url": settings.generator_url})})
    return cfg


log = logging.getLogger("mathrl.server")


def serve(settings: Settings, *, on_ready=None) -> None:
    log_file = setup_logging(settings.work_dir / "logs" / "mathrl.log", settings.log_level)
    debug = settings.log_level == "debug"
    cfg = stack_config(settings)
    store = RunStore(settings.db)
    stack = Stack(cfg, settings.work_dir / "stack", ray_address=settings.ray_address,
                  ray_log_to_driver=debug)
    log.info("starting the generator (%s) and Ray (log: %s)", cfg.model.name_or_path, log_file)

    @asynccontextmanager
    async def lifespan(app):
        stack.start()
        scheduler = Scheduler(store, stack, settings.work_dir)
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

    app = create_app(store, lifespan=lifespan)
    # uvicorn re-raises the signal that stopped it once shutdown is done; with the default
    # SIGTERM disposition that would kill us with -15 after an orderly stop. A no-op handler
    # lets `mathrl up` exit 0 on SIGTERM (Ctrl-C still ends in KeyboardInterrupt -> 130).
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        # log_config=None: uvicorn's records go through our handlers (access lines to the log
        # file; to the console only at debug) instead of loggers of its own.
        uvicorn.run(app, host=settings.host, port=settings.port, log_config=None,
                    log_level="info", timeout_graceful_shutdown=5)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
