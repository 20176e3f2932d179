"""Service settings, from `mathrl up` options or `MATHRL_*` environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Defined apart (the client install has no pydantic-settings); server.py imports it from here.
from orchestrator.service.invalid_file import InvalidFile as InvalidFile


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
    generators: int | None = Field(None, ge=1, le=64)
    """vLLM replicas (`mathrl up --generators N`): overrides the config's
    `generator.replicas`."""
    ray_address: str | None = None
    """Join this Ray cluster (its learner node carries the `learner` resource) instead of
    starting a local head."""
    resume_active: bool = True
    """A run that was active when the orchestrator stopped (crash or shutdown) resumes from its
    last checkpoint when it starts again; False fails it with that reason instead."""
    api_token: SecretStr | None = None
    """`MATHRL_API_TOKEN`: every route but `GET /health` (and the dashboard's page and the API
    docs) then needs `Authorization: Bearer <token>`; the launched vLLM gets it as its API key
    and the CLI sends it. None or empty: the API is open (fine on 127.0.0.1 only)."""
    max_body_bytes: int = Field(1 << 20, ge=1024, le=1 << 30)
    """Largest request body, in bytes (413 above it); a run config is a few KB."""
    data_dirs: Annotated[list[Path], NoDecode] = []
    """`MATHRL_DATA_DIRS` (`:`-separated): folders besides the work dir, `./data` and
    `../shared/data` that `data.path` / `eval.path` files may come from."""
    max_sequences_per_step: int = Field(8192, ge=2, le=1 << 20)
    """Most `rollout.prompts_per_step x rollout.group_size` a submitted run may ask for (each
    sequence's tokens and log-probs are held in memory during a step)."""
    max_eval_problems: int = Field(10_000, ge=1, le=10_000_000)
    """Largest `eval.limit` a submitted run may ask for."""
    reward_hosts: Annotated[list[str], NoDecode] = []
    """`MATHRL_REWARD_HOSTS` (comma-separated `host:port`, or `host` for the URL scheme's
    default port only: 80 or 443): the hosts a run's `http` reward (a verifier over HTTP) may
    reach. Empty: none, and such runs are refused (422)."""
    log_level: Literal["warning", "info", "debug"] = "info"
    """Console detail: `info` shows status changes, step lines, evaluations and warnings;
    `debug` adds the libraries' own logs (HTTP requests, uvicorn access, Ray's output) and
    tracebacks. Everything goes to `<work_dir>/logs/mathrl.log` whatever the level."""

    @field_validator("reward_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, v):
        # From the environment: one string, the hosts separated by commas.
        if isinstance(v, str):
            return [h.strip() for h in v.split(",") if h.strip()]
        return v

    @field_validator("data_dirs", mode="before")
    @classmethod
    def _split_dirs(cls, v):
        # From the environment: a PATH-like list, as shells and users write folder lists.
        if isinstance(v, str):
            return [p for p in v.split(os.pathsep) if p]
        return v
