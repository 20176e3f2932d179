"""`GET /runs/{id}/export`: a run's policy to take away, as a tar of one folder: the PEFT
adapter of a step (its base named as the run submitted it), or with `merge=true` the full
model with that adapter merged in (`mathrl export` unpacks it)."""

from __future__ import annotations

import shutil
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from orchestrator.service.api.deps import RunDep, ServiceDep, StoreDep
from orchestrator.service.api.schemas import RunPublic
from services.adapter_files import MissingAdapter, export_adapter, pick_adapter

router = APIRouter(prefix="/runs", tags=["runs"])
MAX_STEP = 10**9
CHUNK = 1 << 20
BLOCK = tarfile.BLOCKSIZE
_MERGE = threading.Lock()
"""One merge at a time: each holds a whole model in this process's memory (3 GB for a 1.5B
model in bf16), and two at once could take the memory the learner and vLLM need."""


def _adapter(run: RunPublic, cfg: dict, step: int | None) -> tuple[int, Path]:
    """(step, folder) of the adapter asked for: `step`, or the newest on disk."""
    try:
        return pick_adapter(run.run_dir, step)
    except MissingAdapter as e:
        if e.steps:  # that step is gone (or never was); the others are said
            raise HTTPException(status_code=404, detail=f"run {run.id}: {e}") from None
        merged = cfg.get("generator", {}).get("sync_mode") == "merged"
        why = (" (sync_mode \"merged\" writes the merged weights, no adapter)" if merged
               else "")
        raise HTTPException(status_code=409,
                            detail=f"run {run.id} has no adapter on disk yet{why}") from None


def _base_path(name: str, service) -> str:
    """Where the base model's files are on this machine, without a download: the model the
    stack serves (a hub snapshot it fetched, or its folder), another local folder, or a
    snapshot already in the Hugging Face cache."""
    # Here, not at the top: app.py imports this module to register its router.
    from orchestrator.service.api.app import same_model

    stack = service.stack
    if stack is not None and stack.model_path and same_model(
            name, stack.cfg.model.name_or_path, stack.model_path):
        return stack.model_path
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser().resolve())
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(name, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means "not here"
        raise HTTPException(status_code=409, detail=(
            f"the base model {name!r} is not on this machine, so it cannot be merged here; "
            "export the adapter (without merge) and merge it where the base is")) from e


def _build(run: RunPublic, cfg: dict, step: int | None, merge: bool, service,
           work: Path) -> tuple[int, str]:
    """Write the export folder into `work/export`; returns (step, base name)."""
    step, folder = _adapter(run, cfg, step)
    model = cfg.get("model", {})
    base = model.get("name_or_path")
    if not base:
        raise HTTPException(status_code=409, detail=f"run {run.id} records no model.name_or_path")
    out = work / "export"
    try:
        if merge:
            from services.learner.export import export_merged

            base_path = _base_path(base, service)
            with _MERGE:
                export_merged(folder, base_path, out, dtype=model.get("dtype", "auto"))
        else:
            export_adapter(folder, out, base)
    except FileNotFoundError as e:
        # The retention removed this step while it was read (the run went on training).
        raise HTTPException(status_code=409, detail=f"the adapter of step {step} was removed "
                                                    "while it was exported; ask again") from e
    return step, base


def _members(folder: Path) -> list[tuple[tarfile.TarInfo, Path]]:
    out = []
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            info = tarfile.TarInfo(str(p.relative_to(folder)))
            info.size, info.mode, info.mtime = p.stat().st_size, 0o644, int(p.stat().st_mtime)
            out.append((info, p))
    return out


def _padded(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def _tar_size(members: list[tuple[tarfile.TarInfo, Path]]) -> int:
    return sum(len(i.tobuf(tarfile.PAX_FORMAT)) + _padded(i.size) for i, _ in members) + 2 * BLOCK


def _tar_stream(members: list[tuple[tarfile.TarInfo, Path]], work: Path) -> Iterator[bytes]:
    """The tar, written as it is sent: `tarfile` would buffer a whole member (GBs for a merged
    model) or need a second copy on disk. A member is a header block, its bytes padded to a
    block, and two zero blocks end the archive."""
    try:
        for info, path in members:
            yield info.tobuf(tarfile.PAX_FORMAT)
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    yield chunk
            yield b"\0" * (_padded(info.size) - info.size)
        yield b"\0" * (2 * BLOCK)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@router.get("/{run_id}/export", response_class=StreamingResponse, responses={
    200: {"content": {"application/x-tar": {}},
          "description": "a tar of the export folder (its files at the top level)"},
    404: {"description": "no such run, or no adapter of that step (the detail lists those "
                         "available)"},
    409: {"description": "no adapter on disk yet, or (merge) the base model is not here"}})
def export_run(run: RunDep, store: StoreDep, service: ServiceDep,
               step: int | None = Query(None, ge=0, le=MAX_STEP,
                                        description="Adapter step (default: the newest)"),
               merge: bool = Query(False, description="A full model with the adapter merged "
                                                      "in, instead of the adapter")):
    """A run's policy as a tar: a PEFT adapter folder (`adapter_config.json`,
    `adapter_model.safetensors`) whose `base_model_name_or_path` is the run's
    `model.name_or_path` as submitted, or with `merge=true` a model folder (config, weights,
    tokenizer) that transformers and vLLM load. A merge takes seconds to minutes: this route is
    a plain `def`, so it runs in a worker thread and the API keeps answering."""
    root = Path(getattr(service.scheduler, "work_dir", None) or tempfile.gettempdir())
    (root / "exports").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{run.id}-", dir=root / "exports"))
    try:
        step, base = _build(run, store.config(run.id), step, merge, service, work)
        members = _members(work / "export")
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    kind = "merged" if merge else "adapter"
    return StreamingResponse(
        _tar_stream(members, work), media_type="application/x-tar",
        # Also removed here: a client that hangs up mid-download never finishes the stream.
        background=BackgroundTask(shutil.rmtree, work, ignore_errors=True),
        headers={"Content-Length": str(_tar_size(members)),
                 "Content-Disposition":
                     f'attachment; filename="{run.id}-step-{step}-{kind}.tar"',
                 "X-Mathrl-Step": str(step), "X-Mathrl-Export": kind,
                 # Percent-encoded: a header is latin-1, a local path may not be.
                 "X-Mathrl-Base": quote(base, safe="/:@._-~")})
