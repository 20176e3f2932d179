"""The FastAPI application: routes over the run store and the scheduler."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from orchestrator.run.evaluate import eval_length_problem
from orchestrator.service.api.auth import BearerAuth
from orchestrator.service.api.limits import ApiPolicy, BodyLimit
from orchestrator.service.api.routes import evals, runs, system
from orchestrator.service.api.routes.export import router as export_router
from orchestrator.service.api.routes.policy import router as ask_router
from orchestrator.service.api.routes.system import STATIC
from orchestrator.service.store import RunStore
from services.config import RunConfig


@dataclass
class Service:
    """What the routes need to know about the running stack (None parts: API-only mode)."""

    scheduler: object | None = None
    stack: object | None = None
    _tokenizer: object | None = field(default=None, repr=False)
    _tokenizer_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def incompatibility(self, cfg: RunConfig) -> tuple[str, str] | None:
        """(field, message) when `cfg` cannot run on this stack, else None."""
        if self.stack is None:
            return None
        base = self.stack.cfg
        if cfg.generator.sync_mode != base.generator.sync_mode:
            return ("generator.sync_mode",
                    f"this service runs sync_mode={base.generator.sync_mode!r}")
        if not same_model(cfg.model.name_or_path, base.model.name_or_path,
                          self.stack.model_path):
            return ("model.name_or_path",
                    f"this service serves {base.model.name_or_path!r}; start another "
                    "`mathrl up --config` for a different base model")
        if cfg.lora.rank > base.generator.max_lora_rank:
            return ("lora.rank", f"the generator accepts ranks up to "
                                 f"{base.generator.max_lora_rank}")
        served = self.stack.served_max_model_len()
        if cfg.model.max_model_len > served:
            # vLLM answers 400 to any request longer than its --max-model-len: the run would
            # fail at its first long prompt (the step-0 evaluation of the paper recipe).
            return ("model.max_model_len",
                    f"{cfg.model.max_model_len} tokens, but the running generator serves at "
                    f"most {served} (its --max-model-len); lower it, or start the stack with "
                    "a config whose model.max_model_len is larger")
        if cfg.eval.enabled:
            return self.with_tokenizer(lambda tok: eval_length_problem(cfg, tok))
        return None

    def served_config(self) -> RunConfig | None:
        """The config the running generator was started from (None in API-only mode)."""
        return None if self.stack is None else self.stack.cfg

    def with_tokenizer(self, fn):
        """`fn(tokenizer)` with the served model's tokenizer (loaded once), one caller at a
        time: a fast tokenizer used from two request threads at once can fail ("Already
        borrowed"), and submit-time prompt checks are rare."""
        with self._tokenizer_lock:
            if self._tokenizer is None:
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(self.stack.model_path)
            return fn(self._tokenizer)

    def generator_ok(self) -> bool:
        if self.stack is None or self.stack.client is None:
            return False
        try:
            self.stack.client.models()
            return True
        except Exception:  # noqa: BLE001 - health reports, never raises
            return False

    def scheduler_ok(self) -> bool | None:
        """None in API-only mode (no scheduler); False once its thread has died."""
        if self.scheduler is None:
            return None
        return self.scheduler.alive()

    def active_run(self) -> str | None:
        return getattr(self.scheduler, "active", None)

    def queued(self) -> int:
        return self.scheduler.queued() if self.scheduler is not None else 0


def same_model(asked: str, served_name: str, served_path: str) -> bool:
    """Whether a run's `model.name_or_path` is the served base model, without a hub lookup in
    the request handler: a local directory by its resolved path, a hub id by its name."""
    local = Path(asked).expanduser()
    if local.is_dir():
        return local.resolve() == Path(served_path).resolve()
    return asked == served_name


def create_app(store: RunStore, service: Service | None = None, *, lifespan=None,
               policy: ApiPolicy | None = None) -> FastAPI:
    """`policy`: token and request limits (default: no token, the default limits)."""
    app = FastAPI(title="mathrl", version="0.1.0", lifespan=lifespan,
                  description="GRPO training of math-reasoning models, as a service.")
    app.state.store = store
    app.state.service = service or Service()
    app.state.policy = policy = policy or ApiPolicy()
    # The last added runs first: an unauthenticated request is refused before its body is read.
    app.add_middleware(BodyLimit, limit=policy.max_body_bytes)
    if policy.token:
        app.add_middleware(BearerAuth, token=policy.token)
    app.include_router(runs.router)
    app.include_router(evals.router)
    app.include_router(export_router)
    app.include_router(system.router)
    app.include_router(ask_router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
