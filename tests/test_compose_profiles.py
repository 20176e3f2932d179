"""Each shipped GPU profile, chosen as RUN_CONFIG, is what the GPU generator serves.

docker-compose.yml writes no vLLM flag: its generator runs `mathrl generator --config
configs/${RUN_CONFIG}` in an image that is vLLM's plus mathrl (docker/Dockerfile.generator).
For every configs/*.toml made for a GPU, Compose itself renders the file (`docker compose
config`: no engine, nothing started) with RUN_CONFIG set to it; the rendered command is then
run as the container would, with `--device cuda --dry-run` (this machine has no GPU), and the
vLLM command it prints must serve that profile: its max_model_len, LoRA rank, and memory plan.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import docker_env
import pytest
from compose_files import mathrl_up, option, read_env_file
from typer.testing import CliRunner

from orchestrator.cli import app
from services.config import load_config
from services.generator.launcher import server_args, server_env
from services.memory import load_shape, plan_run
from services.memory import plan as mplan

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
GEN_DOCKERFILE = ROOT / "docker" / "Dockerfile.generator"
VLLM_IMAGE = "vllm/vllm-openai:v0.32.0"


def is_gpu_profile(path: Path) -> bool:
    raw = tomllib.loads(path.read_text())
    return "gpu" in raw or raw.get("learner", {}).get("device") == "cuda"


GPU_PROFILES = sorted(p for p in (ROOT / "configs").glob("*.toml") if is_gpu_profile(p))


def test_the_shipped_gpu_profiles():
    assert [p.name for p in GPU_PROFILES] == [
        "paper-gsm8k-12gb.toml", "qwen2.5-math-1.5b-gsm8k-12gb.toml",
        "qwen2.5-math-1.5b-gsm8k-16gb.toml", "qwen2.5-math-1.5b-gsm8k-8gb.toml"]


@pytest.fixture(scope="module")
def compose_cmd() -> list[str]:
    try:
        return docker_env.compose_binary()
    except docker_env.Unavailable as e:
        pytest.skip(f"no Docker Compose v2 to render the file: {e}")


def render(compose_cmd: list[str], tmp_path: Path, **overrides: str) -> dict:
    """`docker compose config` of docker-compose.yml with .env.example (+ overrides) as the
    .env file, in a clean environment (shell variables would win over the file)."""
    env_file = tmp_path / "env"
    values = {**read_env_file(ENV_EXAMPLE), **overrides}
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    clean = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL")}
    out = subprocess.run(
        [*compose_cmd, "-f", str(COMPOSE), "--project-directory", str(ROOT), "--env-file",
         str(env_file), "config", "--format", "json"],
        capture_output=True, text=True, timeout=120, env=clean, cwd=tmp_path)
    assert out.returncode == 0, out.stderr or out.stdout
    return json.loads(out.stdout)


def dry_run(command: list[str], **env: str) -> tuple[dict[str, str], list[str]]:
    """Run the container's `mathrl generator ...` with --device cuda --dry-run, from the
    repository root (the image's WORKDIR /app holds the same configs/): (env, vLLM argv)."""
    assert command[:2] == ["mathrl", "generator"], command
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        out = CliRunner().invoke(app, [*command[1:], "--device", "cuda", "--dry-run"], env=env)
    finally:
        os.chdir(cwd)
    assert out.exit_code == 0, out.output
    env_line, argv_line = out.output.strip().splitlines()[-2:]
    shown = dict(tok.split("=", 1) for tok in shlex.split(env_line))
    return shown, shlex.split(argv_line)


@pytest.mark.parametrize("profile", GPU_PROFILES, ids=lambda p: p.stem)
def test_rendered_generator_serves_the_profile(compose_cmd, tmp_path, profile):
    rendered = render(compose_cmd, tmp_path, RUN_CONFIG=profile.name)
    services = rendered["services"]
    gen = services["generator"]
    command = gen["command"]
    # (a) the container runs `mathrl generator` for this profile, on the port the
    #     orchestrator, the healthcheck and the published port use.
    assert not gen.get("entrypoint"), gen.get("entrypoint")
    assert command == ["mathrl", "generator", "--config", f"configs/{profile.name}",
                       "--host", "0.0.0.0", "--port", "8000"]
    assert option(mathrl_up(services), "--config") == f"configs/{profile.name}"
    assert option(mathrl_up(services), "--generator-url") == "http://generator:8000"
    assert [p["target"] for p in gen["ports"]] == [8000]
    assert ":8000/health" in " ".join(gen["healthcheck"]["test"])
    # (b) built from docker/Dockerfile.generator (vLLM's image + mathrl), never pulled.
    assert gen["build"]["dockerfile"] == "docker/Dockerfile.generator"
    assert Path(gen["build"]["context"]) == ROOT
    assert gen["image"] == "mathrl-generator:local" and gen["pull_policy"] == "never"
    # (c) what it execs serves the profile on CUDA: the launcher's flags and environment.
    shown, vllm = dry_run(command, **gen.get("environment", {}))
    cfg = load_config(profile)
    assert vllm[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert option(vllm, "--model") == cfg.model.name_or_path
    assert int(option(vllm, "--max-model-len")) == cfg.model.max_model_len
    assert "--enable-lora" in vllm
    assert int(option(vllm, "--max-lora-rank")) >= cfg.lora.rank
    plan = plan_run(load_shape(cfg.model.name_or_path), cfg)
    assert int(option(vllm, "--kv-cache-memory-bytes")) == plan.generator.components["kv_cache"]
    assert int(option(vllm, "--max-num-seqs")) == mplan.max_num_seqs(cfg)
    share = float(option(vllm, "--gpu-memory-utilization"))
    assert plan.generator.total / plan.card_bytes <= share < plan.generator.total / \
        plan.card_bytes + 0.01
    assert option(vllm, "--dtype") == "bfloat16"
    served = cfg.model_copy(update={"generator": cfg.generator.model_copy(
        update={"host": "0.0.0.0", "port": 8000})})
    assert vllm[5:] == server_args(served, model_path=cfg.model.name_or_path, device="cuda")
    assert shown == server_env(cfg.generator, device="cuda")


def test_paper_recipe_gets_its_2560_tokens(compose_cmd, tmp_path):
    """The paper recipe's 8-shot evaluation prompts need 2,560 tokens: the stack that runs it
    serves 2,560, not the 1,024 of the other profiles."""
    services = render(compose_cmd, tmp_path, RUN_CONFIG="paper-gsm8k-12gb.toml")["services"]
    _, vllm = dry_run(services["generator"]["command"])
    assert option(vllm, "--max-model-len") == "2560"


def test_token_reaches_vllm_as_its_key(compose_cmd, tmp_path):
    services = render(compose_cmd, tmp_path, MATHRL_API_TOKEN="s3cret")["services"]
    gen = services["generator"]
    assert gen["environment"]["MATHRL_API_TOKEN"] == "s3cret"
    shown, vllm = dry_run(gen["command"], **gen["environment"])
    assert shown["VLLM_API_KEY"] == "***"  # set (the dry run masks it), never on the argv
    assert "s3cret" not in vllm


def test_host_folders_for_runs_and_model_cache(compose_cmd, tmp_path):
    """MATHRL_DATA / HF_CACHE as paths: bind mounts in every service (and `~` is the home)."""
    rendered = render(compose_cmd, tmp_path, MATHRL_DATA="./runs",
                      HF_CACHE="~/.cache/huggingface")
    for name, svc in rendered["services"].items():
        vols = {v["target"]: v for v in svc["volumes"]}
        assert vols["/data"]["type"] == "bind", name
        assert Path(vols["/data"]["source"]) == ROOT / "runs", name
        hf = vols["/root/.cache/huggingface"]
        assert hf["type"] == "bind" and not hf["source"].startswith("~"), name
    defaults = render(compose_cmd, tmp_path)["services"]["learner"]["volumes"]
    assert {v["type"] for v in defaults} == {"volume"}


def test_one_mathrl_image_build(compose_cmd, tmp_path):
    services = render(compose_cmd, tmp_path)["services"]
    builders = sorted(n for n, s in services.items() if s.get("image") == "mathrl:local"
                      and s.get("build"))
    assert builders == ["orchestrator"]
    assert services["learner"]["image"] == "mathrl:local"
    assert services["learner"]["pull_policy"] == "never" and not services["learner"].get("build")


def test_generator_image_is_vllm_plus_mathrl():
    """docker/Dockerfile.generator: vLLM's image, mathrl installed without dependencies (its
    torch stays vLLM's), vLLM's `vllm serve` entrypoint reset, and every GPU profile rendered
    at build time (so a missing import fails the build, not the first start)."""
    text = GEN_DOCKERFILE.read_text()
    assert re.findall(r"^FROM\s+(\S+)", text, re.M) == [VLLM_IMAGE]
    assert re.search(r"pip install --system [^\n]*--no-deps \.", text)
    for src in ("services", "orchestrator", "configs"):
        assert re.search(rf"^COPY\s+{src}\s+\./{src}\s*$", text, re.M), src
    assert re.findall(r"^ENTRYPOINT\s+(.*)$", text, re.M) == ["[]"]
    loop = re.search(r"for profile in ([^;]+);", text).group(1).split()
    covered = {p for pattern in loop for p in ROOT.glob(pattern)}
    assert set(GPU_PROFILES) <= covered
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert {"!pyproject.toml", "!README.md", "!services/", "!orchestrator/", "!configs/"} <= \
        set(ignore)


def test_generator_needs_nothing_vllms_image_lacks():
    """`mathrl generator` imports none of the service's heavy dependencies: the vLLM image has
    no peft, Ray, math-verify or datasets (vLLM's requirements/{common,cuda}.txt), and the
    generator image adds only typer, rich and httpx."""
    code = ("import sys; from orchestrator.cli import main; sys.argv = ['mathrl', 'generator', "
            "'--config', 'configs/paper-gsm8k-12gb.toml', '--device', 'cuda', '--dry-run']\n"
            "try: main()\nexcept SystemExit: pass\n"
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=ROOT, check=True)
    loaded = set(out.stdout.split())
    assert {"orchestrator", "services", "typer"} <= loaded
    assert not loaded & {"peft", "ray", "math_verify", "datasets", "trl", "bitsandbytes"}
