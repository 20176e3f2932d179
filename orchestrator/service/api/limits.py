"""What the API accepts from a client it does not trust: body size, data paths, model names,
and how much work one run may ask for. Checked in the request handler without network or disk
reads (a `stat` at most), so a hostile request costs the server next to nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.config import RunConfig
from services.paths import (
    data_file_problem,
    default_data_roots,
    model_problem,
    source_problem,
)

DEFAULT_WORK_DIR = Path(".mathrl/work")


@dataclass(frozen=True)
class ApiPolicy:
    """The API's limits and its token (from `orchestrator.service.settings.Settings`)."""

    token: str | None = None
    """Bearer token every non-public route needs; None: the API is open."""
    max_body_bytes: int = 1 << 20
    """Largest request body; a run config is a few KB."""
    data_roots: tuple[Path, ...] = field(
        default_factory=lambda: tuple(default_data_roots(DEFAULT_WORK_DIR)))
    """Folders `data.path` / `eval.path` files must be in."""
    max_sequences_per_step: int = 8192
    """Most `rollout.prompts_per_step x rollout.group_size` a run may ask for."""
    max_eval_problems: int = 10_000
    """Largest `eval.limit`."""
    reward_hosts: tuple[str, ...] = ()
    """Hosts (`host:port`, or `host` for its scheme's default port) a run's `http` reward may
    reach (MATHRL_REWARD_HOSTS)."""

    @classmethod
    def from_settings(cls, settings) -> ApiPolicy:
        token = settings.api_token.get_secret_value() if settings.api_token else None
        return cls(token=token or None, max_body_bytes=settings.max_body_bytes,
                   data_roots=tuple(default_data_roots(settings.work_dir, settings.data_dirs)),
                   max_sequences_per_step=settings.max_sequences_per_step,
                   max_eval_problems=settings.max_eval_problems,
                   reward_hosts=tuple(settings.reward_hosts))

    def run_problem(self, cfg: RunConfig) -> tuple[str, str] | None:
        """(field, message) for the first thing this service refuses to run, else None."""
        if (msg := model_problem(cfg.model.name_or_path)) is not None:
            return "model.name_or_path", msg
        for section in ("data", "eval"):
            sec = getattr(cfg, section)
            msg = source_problem(sec.source, sec.path, self.data_roots)
            if msg is not None:
                return f"{section}.path", msg
        for i, b in enumerate(cfg.eval.benchmarks):  # local files too, never a Hub name
            for name in ("path", "fewshot_path"):
                value = getattr(b, name)
                if value and (msg := data_file_problem(value, self.data_roots)) is not None:
                    return f"eval.benchmarks.{i}.{name}", msg
        seqs = cfg.rollout.prompts_per_step * cfg.rollout.group_size
        if seqs > self.max_sequences_per_step:
            return ("rollout.prompts_per_step",
                    f"{cfg.rollout.prompts_per_step} prompts x {cfg.rollout.group_size} "
                    f"samples = {seqs} sequences per step; this service allows at most "
                    f"{self.max_sequences_per_step} (MATHRL_MAX_SEQUENCES_PER_STEP)")
        limit = cfg.eval.limit
        if limit is not None and limit > self.max_eval_problems:
            return ("eval.limit", f"at most {self.max_eval_problems} eval problems "
                                  "(MATHRL_MAX_EVAL_PROBLEMS)")
        return None


def get_policy(request: Request) -> ApiPolicy:
    return request.app.state.policy


PolicyDep = Annotated[ApiPolicy, Depends(get_policy)]


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps({"detail": f"request body over {limit} bytes"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """413 for a body over `limit` bytes: at once from `Content-Length`, else (chunked) as soon
    as the bytes read pass it. The body is read here, bounded, and replayed to the app."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                return await _too_large(send, self.limit)
        chunks, size = [], 0
        pending: list[Message] = []
        while True:
            msg = await receive()
            if msg["type"] != "http.request":  # the client went away mid-body
                pending.append(msg)
                break
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await _too_large(send, self.limit)
            if not msg.get("more_body", False):
                break
        pending.insert(0, {"type": "http.request", "body": b"".join(chunks), "more_body": False})

        async def replay() -> Message:
            # The buffered body first; later calls (an SSE route waiting for the client to
            # disconnect) go to the server as before.
            return pending.pop(0) if pending else await receive()

        await self.app(scope, replay, send)
