"""`pip install mathrl` with no extras is a working client: the client verbs import and run
without torch, Ray, vLLM or the service's web stack, and a service verb says which extra to
install instead of failing with a traceback.

Two layers: an import guard in the test venv (fast; it has everything installed, so it checks
what the CLI *imports*, not what is installed), and a real client-only install in a fresh
venv (tests/client_venv.py) that checks what a person on another machine meets.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest
from client_venv import clean_env, client_mathrl
from conftest import ROOT, free_port

# What a client verb must never import: the stacks the service extras bring.
HEAVY = ("torch", "ray", "vllm", "transformers", "peft", "fastapi", "uvicorn", "starlette",
         "pydantic_settings", "math_verify", "safetensors", "tokenizers", "numpy")
CLIENT_VERBS = ("submit", "status", "cancel", "resume", "eval", "export")


def test_client_verbs_import_nothing_heavy(tmp_path):
    """Every client verb's --help, and the real verbs against a closed port, in a fresh
    interpreter of the test venv: none of HEAVY is in sys.modules afterwards."""
    config = tmp_path / "run.toml"
    config.write_text('name = "x"\n')
    script = textwrap.dedent(f"""
        import json, sys
        from typer.testing import CliRunner
        from orchestrator.cli import app
        from orchestrator.cli.errors import describe

        registered = {{c.name or c.callback.__name__ for c in app.registered_commands}}
        verbs = [v for v in {CLIENT_VERBS!r} if v in registered]
        runner = CliRunner()
        codes = {{}}
        for v in verbs:
            codes[v + " --help"] = runner.invoke(app, [v, "--help"]).exit_code
        url = "http://127.0.0.1:{free_port()}"
        for argv in (["status", "--url", url], ["status", "r1", "--url", url],
                     ["submit", {str(config)!r}, "--url", url], ["cancel", "r1", "--url", url],
                     ["resume", "r1", "--url", url]):
            r = runner.invoke(app, argv)
            # The failure as the person sees it (errors.run_cli): built here too, so its
            # imports count.
            failure = describe(r.exception) if r.exception else None
            codes[" ".join(argv[:2])] = failure.code if failure else r.exit_code
        heavy = sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))
        print(json.dumps({{"verbs": verbs, "codes": codes, "heavy": heavy}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"submit", "status", "cancel", "resume", "eval"} <= set(found["verbs"]), found
    helps = {k: c for k, c in found["codes"].items() if k.endswith("--help")}
    assert set(helps.values()) == {0}, helps
    # Unreachable API: exit 1 from the error lines, for each verb that calls it.
    calls = {k: c for k, c in found["codes"].items() if not k.endswith("--help")}
    assert set(calls.values()) == {1}, calls
    assert found["heavy"] == [], f"a client verb imported {found['heavy']}"


def test_a_missing_service_module_is_the_install_line():
    """A service module missing -> the install line, exit 2; any other missing module is
    not the client install's doing and keeps its own message."""
    from orchestrator.cli.errors import describe, require

    failure = describe(ModuleNotFoundError("No module named 'torch'", name="torch"))
    assert failure is not None and failure.code == 2
    assert "'torch'" in failure.message and "mathrl[cpu]" in failure.message
    assert len(failure.message.splitlines()) == 1
    assert describe(ModuleNotFoundError("No module named 'x'", name="x")) is None
    with pytest.raises(ModuleNotFoundError) as e:
        require("json", "surely_not_installed_here")
    assert e.value.name == "surely_not_installed_here"


@pytest.fixture(scope="module")
def mathrl(tmp_path_factory):
    t0 = time.monotonic()
    path = client_mathrl(tmp_path_factory)
    print(f"client venv built in {time.monotonic() - t0:.0f} s")
    return path


def run(mathrl, *args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([str(mathrl), *args], cwd=cwd, env=clean_env(), capture_output=True,
                          text=True, timeout=120)


@pytest.mark.slow  # pip install from the package index: 30-60 s
def test_client_only_install(mathrl, tmp_path):
    python = mathrl.parent / "python"
    missing = subprocess.run(
        [str(python), "-c", "import importlib.util as u, json; print(json.dumps("
         f"[m for m in {HEAVY!r} if u.find_spec(m) is not None]))"],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert missing.returncode == 0, missing.stderr
    assert json.loads(missing.stdout) == [], "the client install brought " + missing.stdout
    # The installed copy, not the working tree.
    where = subprocess.run([str(python), "-c", "import orchestrator; print(orchestrator.__file__)"],
                           cwd=tmp_path, env=clean_env(), capture_output=True, text=True)
    assert str(mathrl.parents[1]) in where.stdout, where.stdout

    shown = run(mathrl, "--help", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    verbs = [v for v in CLIENT_VERBS if v != "export" or (ROOT / "orchestrator" / "cli" /
                                                         "export.py").exists()]
    for verb in verbs:
        assert verb in shown.stdout, (verb, shown.stdout)
        assert run(mathrl, verb, "--help", cwd=tmp_path).returncode == 0, verb

    down = run(mathrl, "status", "--url", f"http://127.0.0.1:{free_port()}", cwd=tmp_path)
    assert down.returncode == 1, (down.stdout, down.stderr)
    err = down.stderr.strip()
    assert err.startswith("error: cannot reach the mathrl API"), err
    assert "Traceback" not in err and len(err.splitlines()) <= 2, err


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["up"], ["grade", "answers.jsonl"], ["demo"],
                                  ["train", "run.toml"],
                                  ["eval", "--model", "m", "--dataset", "arith"]],
                         ids=lambda a: a[0])
def test_service_verbs_name_the_extra(mathrl, tmp_path, argv):
    """A service verb in the client install: one line naming the extras, exit 2."""
    (tmp_path / "answers.jsonl").write_text('{"completion": "\\\\boxed{2}", "gold": "2"}\n')
    (tmp_path / "run.toml").write_text((ROOT / "configs" / "tiny-cpu.toml").read_text())
    out = run(mathrl, *argv, cwd=tmp_path)
    err = out.stderr.strip()
    assert out.returncode == 2, (out.returncode, out.stdout, err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "mathrl[cpu]" in err and "mathrl[gpu]" in err, err
