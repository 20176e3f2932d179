"""Logging of `mathrl up` and `mathrl train`: a console that reads like a training log, and
everything in a file.

The console shows mathrl's own records (status changes, one line per step, evaluations) and
every library's warnings; the libraries' info chatter (an httpx line per generation request,
uvicorn's access log, Ray's banners, MLflow's migrations) goes only to the file, and back to
the console with `--log-level debug`. Tracebacks go to the file; the console gets the last
line of one and where the rest is, unless the level is debug.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Literal

LogLevel = Literal["warning", "info", "debug"]
OWN = "mathrl"
# Libraries that give their logger a console handler of their own on import (and stop it
# propagating): their records are handed to ours, so the filter and the log file see them.
SELF_HANDLED = ("ray",)
# Announcements made at WARNING on every start that ask nothing of the person: shown like the
# libraries' info lines (file only, unless the level is debug).
BANNERS = ("Token authentication is enabled for this Ray cluster",)


def _own(record: logging.LogRecord) -> bool:
    return record.name == OWN or record.name.startswith(OWN + ".")


class ConsoleFilter(logging.Filter):
    """mathrl's records from `level` up; other libraries' from WARNING up (INFO at debug)."""

    def __init__(self, level: LogLevel):
        super().__init__()
        self.own = getattr(logging, level.upper())
        self.lib = logging.INFO if level == "debug" else max(self.own, logging.WARNING)

    def filter(self, record: logging.LogRecord) -> bool:
        if _own(record):
            return record.levelno >= self.own
        level = record.levelno
        if level == logging.WARNING and record.getMessage().startswith(BANNERS):
            level = logging.INFO
        return level >= self.lib


class ConsoleFormatter(logging.Formatter):
    """`HH:MM:SS message` for mathrl's info lines; level and logger name for the rest."""

    def __init__(self, *, tracebacks: bool, log_file: Path):
        super().__init__(datefmt="%H:%M:%S")
        self.tracebacks, self.log_file = tracebacks, log_file

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        cut = False
        if not self.tracebacks and msg.lstrip().startswith("Traceback (most recent call last)"):
            # A library that logs a formatted traceback as its message (uvicorn's lifespan
            # failure does): keep the exception line.
            msg, cut = [ln for ln in msg.strip().splitlines() if ln.strip()][-1], True
        if record.exc_info:
            if self.tracebacks:
                msg += "\n" + self.formatException(record.exc_info)
            else:
                cut = True
        if cut:
            msg += f"  (traceback in {self.log_file})"
        when = self.formatTime(record, self.datefmt)
        if _own(record) and record.levelno == logging.INFO:
            return f"{when} {msg}"
        return f"{when} {record.levelname.lower()} {record.name}: {msg}"


def setup_logging(log_file: Path, level: LogLevel = "info") -> Path:
    """Console handler (stderr) + a file with everything at INFO (mathrl's at DEBUG).

    Replaces handlers a previous call installed, so it can run once per process entry point."""
    log_file = Path(log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    reset_logging()
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    logging.getLogger(OWN).setLevel(logging.DEBUG)
    for name in SELF_HANDLED:
        lib = logging.getLogger(name)
        lib.handlers.clear()
        lib.propagate = True
    console = logging.StreamHandler(sys.stderr)
    console.addFilter(ConsoleFilter(level))
    console.setFormatter(ConsoleFormatter(tracebacks=level == "debug", log_file=log_file))
    file = logging.FileHandler(log_file)
    file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for h in (console, file):
        h._mathrl = True  # type: ignore[attr-defined]
        root.addHandler(h)
    logging.captureWarnings(True)  # warnings.warn -> `py.warnings`: console and file
    return log_file


def reset_logging() -> None:
    """Remove the handlers `setup_logging` installed (and close its file)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_mathrl", False):
            root.removeHandler(h)
            h.close()
    logging.captureWarnings(False)


def where(log_file: Path, stack) -> str:
    """The console line that says where the full logs are (`stack`: an orchestrator Stack)."""
    parts = [f"logs: {log_file}"]
    if getattr(stack, "server", None) is not None:
        parts.append(f"generator {stack.server.log_path}")
    if getattr(stack, "ray_logs", None):
        parts.append(f"Ray workers {stack.ray_logs}")
    return parts[0] + (f" (also {', '.join(parts[1:])})" if len(parts) > 1 else "")
