"""`mathrl train`: one run in the foreground, without the API: the generator and Ray start for
it and stop after it. Its console is the same training log as `mathrl up`'s."""

from __future__ import annotations

import logging
from pathlib import Path

from orchestrator.run.logs import LogLevel, setup_logging, where
from orchestrator.run.metrics import ConsoleSink, JsonlSink
from orchestrator.run.stack import Stack, prepare_run
from orchestrator.run.trackers import open_trackers
from services.config import RunConfig

log = logging.getLogger("mathrl.train")


def train_foreground(cfg: RunConfig, base: Path, *, log_level: LogLevel = "info") -> Path:
    """Train `cfg` in `<base>/<name>`; returns the metrics.jsonl path."""
    run_dir = base / cfg.name
    log_file = setup_logging(run_dir / "logs" / "train.log", log_level)
    log.info("training %s for %d steps in %s; starting the generator and Ray (log: %s)",
             cfg.name, cfg.schedule.steps, run_dir, log_file)
    # Before vLLM starts: a tracker named in the config but not installed fails in seconds.
    trackers = open_trackers(cfg, run_dir)
    jsonl = JsonlSink(run_dir / "metrics.jsonl")
    status = "failed"
    try:
        with Stack(cfg, base / ".stack", ray_log_to_driver=log_level == "debug") as stack:
            log.info("generator and Ray are up; trackers: %s; %s", trackers.describe(),
                     where(log_file, stack))
            handle = prepare_run(stack, cfg, run_dir,
                                 sinks=[jsonl, ConsoleSink(cfg.schedule.steps), trackers])
            # What the service records as run notes (a reward function's first failure).
            handle.loop.sinks.append(lambda step, _m: [
                log.warning("step %d: %s", step, t) for t in handle.scorer.take_notes()])
            try:
                handle.loop.run()
                status = "completed"
            finally:
                handle.close()
    finally:
        jsonl.close()
        trackers.close(status)
    return jsonl.path
