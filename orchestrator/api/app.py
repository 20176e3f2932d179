"""The FastAPI application: routes over the run store and the scheduler."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from orchestrator.api.routes import runs, system
from orchestrator.api.routes.system import STATIC
from orchestrator.store import RunStore
from services.config import RunConfig


@dataclass
class Service:
    """What the routes need to know about the running stack (None parts: API-only mode)."""

    scheduler: object | None = None
    stack: object | None = None

    def incompatibility(self, cfg: RunConfig) -> tuple[str, str] | None:
        """(field, message) when `cfg` cannot run on this stack, else None."""
        if self.stack is None:
            return None
        from orchestrator.stack import resolve_model_path

        base = self.stack.cfg
        if cfg.generator.sync_mode != base.generator.sync_mode:
            return ("generator.sync_mode",
                    f"this service runs sync_mode={base.generator.sync_mode!r}")
        try:
            same = Path(resolve_model_path(cfg.model.name_or_path)) == Path(self.stack.model_path)
        except Exception:  # noqa: BLE001 - unreachable hub id, bad path: not this model
            same = False
        if not same:
            return ("model.name_or_path",
                    f"this service serves {base.model.name_or_path!r}; start another "
                    "`mathrl up --config` for a different base model")
        if cfg.lora.rank > base.generator.max_lora_rank:
            return ("lora.rank", f"the generator accepts ranks up to "
                                 f"{base.generator.max_lora_rank}")
        return None

    def generator_ok(self) -> bool:
        if self.stack is None or self.stack.client is None:
            return False
        try:
            self.stack.client.models()
            return True
        except Exception:  # noqa: BLE001 - health reports, never raises
            return False

    def active_run(self) -> str | None:
        return getattr(self.scheduler, "active", None)

    def queued(self) -> int:
        return self.scheduler.queued() if self.scheduler is not None else 0


def create_app(store: RunStore, service: Service | None = None, *, lifespan=None) -> FastAPI:
    app = FastAPI(title="mathrl", version="0.1.0", lifespan=lifespan,
                  description="GRPO training of math-reasoning models, as a service.")
    app.state.store = store
    app.state.service = service or Service()
    app.include_router(runs.router)
    app.include_router(system.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
