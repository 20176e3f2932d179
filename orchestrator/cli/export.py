"""`mathrl export`: download a run's adapter (or, with --merge, the merged model) from the
service into a new folder. Client side only: httpx, typer and the standard library's tarfile,
so it works where the client is installed without torch."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.client import MathrlClient

# Declared here rather than imported from cli/service.py, whose imports (rich, the run
# package) this light verb does not need.
UrlOpt = Annotated[str | None, typer.Option("--url", envvar="MATHRL_URL",
                                            help="Orchestrator API (default 127.0.0.1:8000)")]


class ExportRefused(Exception):
    """A local reason not to export (exit 2, one line)."""


def _check_out(out: Path) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ExportRefused(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise ExportRefused(f"--out {out} exists and is not empty; name a new or empty folder")


def _unpack(archive: Path, dest: Path) -> None:
    """Extract with the standard library's "data" filter: a member with an absolute path, a
    `..`, a link out of `dest` or a device file is refused, so a hostile or broken server
    cannot write outside the folder."""
    if not hasattr(tarfile, "data_filter"):  # Python 3.11.0-3.11.3 lack extraction filters
        raise ExportRefused("this Python cannot extract archives safely; use 3.11.4 or newer")
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")


def download(client: MathrlClient, run_id: str, out: Path, *, step: int | None = None,
             merge: bool = False) -> dict:
    """The export of `run_id` as the folder `out` (new or empty). It is downloaded and
    unpacked beside `out` and renamed into place at the end, so a failure leaves no half
    folder behind."""
    out = Path(os.path.abspath(out))  # `--out .` or `x/..`: a real name and parent to work beside
    _check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    try:
        info = client.export(run_id, work / "export.tar", step=step, merge=merge)
        folder = work / "folder"
        _unpack(work / "export.tar", folder)
        _check_out(out)  # still new or empty (nothing wrote there while we downloaded)
        if out.is_dir():
            out.rmdir()
        os.replace(folder, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return info


def export(run_id: str,
           out: Annotated[Path, typer.Option("--out", help="New (or empty) folder to write")],
           step: Annotated[int | None, typer.Option(
               min=0, help="Adapter step (default: the newest on the server)")] = None,
           merge: Annotated[bool, typer.Option(
               "--merge", help="A full model with the adapter merged in")] = False,
           url: UrlOpt = None) -> None:
    """Download a run's policy: a PEFT adapter whose base is the run's model as submitted, or
    with --merge a model folder that transformers and vLLM load."""
    client = MathrlClient(url)
    try:
        info = download(client, run_id, out, step=step, merge=merge)
    except ExportRefused as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    finally:
        client.close()
    what = "merged model" if info["kind"] == "merged" else "adapter"
    typer.echo(f"{out}: {what} of run {run_id} at step {info['step']} (base {info['base']})")


def register(app: typer.Typer) -> None:
    app.command()(export)
