"""FastAPI dependencies: the store and scheduler live on `app.state` (set by `create_app`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from orchestrator.service.api.records import run_public
from orchestrator.service.api.schemas import RunPublic
from orchestrator.service.store import RunStore


def get_store(request: Request) -> RunStore:
    return request.app.state.store


def get_service(request: Request):
    return request.app.state.service


StoreDep = Annotated[RunStore, Depends(get_store)]
ServiceDep = Annotated[object, Depends(get_service)]


def get_run(run_id: str, store: StoreDep) -> RunPublic:
    run = store.get(run_id)
    if run is None:
        raise HTTPException(status_code=404, detail=f"no run {run_id!r}")
    return run_public(run)


RunDep = Annotated[RunPublic, Depends(get_run)]
