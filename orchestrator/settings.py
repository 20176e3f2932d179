"""Service settings, from `mathrl up` options or `MATHRL_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MATHRL_", extra="ignore",
                                      use_attribute_docstrings=True)

    host: str = "127.0.0.1"
    """Address the API binds (0.0.0.0 only inside a container)."""
    port: int = Field(8000, ge=1, le=65535)
    """API port."""
    config: Path | None = None
    """Run config (TOML) whose model/generator sections define the served stack; runs
    submitted later must use the same base model. None: configs/tiny-cpu.toml defaults."""
    db: Path = Path(".mathrl/mathrl.db")
    """SQLite run store (WAL)."""
    work_dir: Path = Path(".mathrl/work")
    """Adapters, checkpoints and logs: `<work_dir>/runs/<run_id>/...`. Shared with the
    generator and learner (same path) when they run in other containers."""
    generator_url: str | None = None
    """An already running vLLM server to use instead of launching one."""
    ray_address: str | None = None
    """Join this Ray cluster (its learner node carries the `learner` resource) instead of
    starting a local head."""
    log_level: Literal["warning", "info", "debug"] = "info"
    """Console detail: `info` shows status changes, step lines, evaluations and warnings;
    `debug` adds the libraries' own logs (HTTP requests, uvicorn access, Ray's output) and
    tracebacks. Everything goes to `<work_dir>/logs/mathrl.log` whatever the level."""
