"""docker-compose.yml agrees with the code (no Docker needed).

The compose file repeats things the code defines: the vLLM flags and environment the launcher
would use (`server_args` / `server_env`), the `mathrl` verbs and options, the Ray `learner`
resource, ports and shared paths. These tests read the file with PyYAML, substitute
`${VAR:-default}` from `.env.example` as Compose does, and compare. The last test asks
Debian's `docker-compose` (1.29.2) to validate the file when it is installed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import typer.main
import yaml

from orchestrator.cli import app
from services.config import load_config
from services.generator.launcher import server_args, server_env

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
CONFIG_12GB = ROOT / "configs" / "qwen2.5-math-1.5b-gsm8k-12gb.toml"
SERVICES = ("generator", "learner", "orchestrator")
GPU_SERVICES = ("generator", "learner")
HF_CACHE = "/root/.cache/huggingface"
# The generator service serves on this address inside its container.
GEN_HOST, GEN_PORT, GEN_DEVICE = "0.0.0.0", 8000, "cuda"


# --- reading the files -------------------------------------------------------------------

def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a Compose env file (comments and blank lines skipped)."""
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution: $$, $VAR, ${VAR}, ${VAR:-x}, ${VAR-x}, ${VAR:?e}."""

    def repl(m: re.Match) -> str:
        if m.group("escaped"):
            return "$"
        name = m.group("braced") or m.group("bare")
        op, arg = m.group("op"), m.group("arg")
        value = env.get(name)
        if op in (":-", ":?") and not value:
            value = None
        if value is None:
            if op and op.endswith("?"):
                raise AssertionError(f"required variable {name} is unset: {arg}")
            return arg if op else ""
        return value

    return _VAR.sub(repl, text)


def resolve(node, env: dict[str, str]):
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [resolve(x, env) for x in node]
    if isinstance(node, dict):
        return {k: resolve(v, env) for k, v in node.items()}
    return node


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


def environment(svc: dict) -> dict[str, str]:
    envs = svc.get("environment") or {}
    if isinstance(envs, list):
        envs = dict(item.partition("=")[::2] for item in envs)
    return {k: "" if v is None else str(v) for k, v in envs.items()}


def argv(value) -> list[str]:
    """A command/entrypoint as an argv list (Compose splits strings shell-like)."""
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(x) for x in value]


_SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")", ";;", "\n"}
_PREFIXES = {"exec", "until", "while", "if", "then", "do", "else", "elif", "!", "time"}
_CLOSERS = {"done", "fi", "esac"}


def shell_commands(svc: dict) -> list[list[str]]:
    """Every simple command a service runs: its argv, or the commands of its `sh -c` script."""
    args = argv(svc.get("entrypoint")) + argv(svc.get("command"))
    if len(args) >= 3 and PurePosixPath(args[0]).name in ("sh", "bash") and args[1] == "-c":
        lexer = shlex.shlex(args[2], posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        commands, current = [], []
        for tok in lexer:
            if tok in _SEPARATORS:
                commands.append(current)
                current = []
            elif not current and tok in _PREFIXES:
                continue
            else:
                current.append(tok)
        commands.append(current)
        return [c for c in commands if c and c[0] not in _CLOSERS]
    return [args] if args else []


def option(args: list[str], name: str) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE` (the last one wins, as in Click)."""
    value = None
    for i, tok in enumerate(args):
        if tok == name and i + 1 < len(args):
            value = args[i + 1]
        elif tok.startswith(name + "="):
            value = tok[len(name) + 1:]
    return value


def mathrl_commands(services: dict) -> list[tuple[str, list[str]]]:
    return [(name, cmd) for name, svc in services.items()
            for cmd in shell_commands(svc) if PurePosixPath(cmd[0]).name == "mathrl"]


def ray_starts(services: dict) -> list[tuple[str, list[str]]]:
    return [(name, cmd) for name, svc in services.items()
            for cmd in shell_commands(svc) if cmd[:2] == ["ray", "start"]]


def mathrl_up(services: dict) -> list[str]:
    ups = [cmd for name, cmd in mathrl_commands(services)
           if name == "orchestrator" and len(cmd) > 1 and cmd[1] == "up"]
    assert len(ups) == 1, "the orchestrator must run `mathrl up` exactly once"
    return ups[0]


def mounts(svc: dict) -> dict[str, str]:
    """target path -> source (volume name or host path) of a service's volumes."""
    out = {}
    for vol in svc.get("volumes") or []:
        if isinstance(vol, dict):
            out[vol["target"]] = vol.get("source", "")
        else:
            parts = vol.split(":")
            if len(parts) == 1:
                out[parts[0]] = ""
            else:
                out[parts[1]] = parts[0]
    return out


def container_ports(svc: dict) -> list[int]:
    out = []
    for port in svc.get("ports") or []:
        if isinstance(port, dict):
            out.append(int(port["target"]))
        else:
            out.append(int(str(port).split("/")[0].rsplit(":", 1)[-1]))
    return out


def generator_expected(cfg, model_path: str) -> list[str]:
    gen = cfg.generator.model_copy(update={"host": GEN_HOST, "port": GEN_PORT})
    return server_args(cfg.model_copy(update={"generator": gen}), model_path=model_path,
                       device=GEN_DEVICE)


def generator_split(gen_svc: dict) -> tuple[str, list[str]]:
    args = argv(gen_svc.get("command"))
    assert "--model" in args, "the generator command must name --model"
    i = args.index("--model")
    assert i == 0, "the generator command starts with --model MODEL"
    return args[i + 1], args[i + 2:]


# --- the tests ---------------------------------------------------------------------------

def test_three_services(services):
    assert set(SERVICES) <= set(services)


def test_env_example_covers_every_variable():
    """Every ${VAR} of the compose file is documented (set) in .env.example."""
    text = COMPOSE.read_text().replace("$$", "")
    used = {m.group("braced") or m.group("bare") for m in _VAR.finditer(text)}
    documented = read_env_file(ENV_EXAMPLE)
    assert used - set(documented) == set()
    assert {"MODEL", "GPU_MEMORY_UTILIZATION", "MATHRL_PORT", "HF_TOKEN"} <= set(documented)


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


def test_generator_flags_match_server_args(services, cfg):
    gen = services["generator"]
    assert re.fullmatch(r"vllm/vllm-openai:v\d+\.\d+\.\d+", gen["image"]), gen["image"]
    assert argv(gen.get("entrypoint")) == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    model, flags = generator_split(gen)
    assert model == cfg.model.name_or_path
    assert flags == generator_expected(cfg, model)


PROFILES = sorted((ROOT / "configs").glob("qwen2.5-math-1.5b-gsm8k-*gb.toml"))


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem.rsplit("-", 1)[-1])
def test_each_profile_is_served_by_its_planned_variables(env, profile):
    """One generator service serves every GPU profile: with the four variables that
    `mathrl plan --env` prints for a profile, compose's flags are the launcher's for it."""
    from orchestrator.cli.plan import compose_env
    from services.memory import load_shape, plan_run

    prof = load_config(profile)
    plan_env = compose_env(prof, plan_run(load_shape(prof.model.name_or_path), prof),
                           prof.model.name_or_path)
    services = resolve(yaml.safe_load(COMPOSE.read_text()), {**env, **plan_env})["services"]
    model, flags = generator_split(services["generator"])
    assert model == prof.model.name_or_path
    assert flags == generator_expected(prof, model)
    if profile == CONFIG_12GB:  # the default RUN_CONFIG: .env.example carries its values
        assert {k: env[k] for k in plan_env} == plan_env
    # The comment in .env.example lists each profile's values.
    assert all(f"{k}={v}" in ENV_EXAMPLE.read_text() for k, v in plan_env.items())


def test_compose_defaults_are_the_12gb_plan(env):
    """Without an .env file, compose's `${VAR:-default}` values serve the 12 GB profile."""
    services = resolve(yaml.safe_load(COMPOSE.read_text()), {})["services"]
    cfg12 = load_config(CONFIG_12GB)
    _, flags = generator_split(services["generator"])
    assert flags == generator_expected(cfg12, cfg12.model.name_or_path)


def test_generator_environment_matches_server_env(services, cfg):
    env = environment(services["generator"])
    for key, value in server_env(cfg.generator, device=GEN_DEVICE).items():
        assert env.get(key) == value, f"generator: {key}={env.get(key)!r}, want {value!r}"


def test_orchestrator_runs_the_12gb_config_from_the_image(services, cfg, env):
    up = mathrl_up(services)
    config = PurePosixPath(option(up, "--config"))
    assert (ROOT / "configs" / config.name).is_file()
    assert config.name == CONFIG_12GB.name, "with .env.example, the stack serves the 12 GB config"
    assert env["MODEL"] == cfg.model.name_or_path
    # The image has configs/ at <WORKDIR>/configs.
    text = DOCKERFILE.read_text()
    workdir = re.findall(r"^WORKDIR\s+(\S+)", text, re.M)[-1]
    copied = re.search(r"^COPY\s+configs/?\s+(\S+)", text, re.M)
    assert copied, "the Dockerfile copies configs/"
    dest = PurePosixPath(workdir) / copied.group(1)
    assert config.parent == PurePosixPath(os.path.normpath(dest))


def test_ports_agree(services):
    up = mathrl_up(services)
    assert option(up, "--host") == "0.0.0.0", "the API must listen beyond the container"
    assert container_ports(services["orchestrator"]) == [int(option(up, "--port"))]
    url = option(up, "--generator-url")
    m = re.fullmatch(r"http://([^:/]+):(\d+)/?", url or "")
    assert m, f"--generator-url {url!r}"
    assert m.group(1) == "generator"
    _, flags = generator_split(services["generator"])
    assert int(m.group(2)) == int(option(flags, "--port"))
    for port in container_ports(services["generator"]):
        assert port == int(option(flags, "--port"))


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
    _, flags = generator_split(services["generator"])
    assert f":{option(flags, '--port')}/health" in gen
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
    the orchestrator (the API's token, sent to vLLM) and the generator (its vLLM key), as
    `server_env` would set it for a generator mathrl launches."""
    services = resolve(yaml.safe_load(COMPOSE.read_text()), env)["services"]
    assert services["orchestrator"]["ports"] == ["127.0.0.1:8000:8000"]
    assert "MATHRL_API_TOKEN" in env and not env["MATHRL_API_TOKEN"]  # documented, unset
    with_token = {**env, "MATHRL_API_TOKEN": "s3cret"}
    services = resolve(yaml.safe_load(COMPOSE.read_text()), with_token)["services"]
    assert environment(services["orchestrator"])["MATHRL_API_TOKEN"] == "s3cret"
    gen_env = environment(services["generator"])
    key = server_env(cfg.generator, device=GEN_DEVICE, api_key="s3cret")["VLLM_API_KEY"]
    assert gen_env["VLLM_API_KEY"] == key == "s3cret"
    # vLLM takes an empty key as none: without a token the generator stays open, as the API.
    assert not environment(resolve(yaml.safe_load(COMPOSE.read_text()), env)["services"][
        "generator"])["VLLM_API_KEY"]


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
    vLLM: no module of the package imports vllm, the orchestrator reaches the generator
    service by URL (so it never launches vLLM), and its torch is the one the generator
    image's vLLM pins (docker/constraints.txt)."""
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
    assert services["generator"]["image"].endswith(f":v{pins['vllm']}")


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
