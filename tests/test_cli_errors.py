"""The CLI as a person meets it when something is wrong: no server, a config the server
rejects (422), an unknown run (404), a finished run (409), a broken local file. Each is one or
two plain lines and a non-zero exit code; the traceback only with `--debug`.

The verbs run as real processes (`python -m orchestrator.cli`) against the real API app
over a real run store, served by uvicorn on 127.0.0.1 (API-only: no generator, no scheduler,
so a submitted run stays queued).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from conftest import ROOT, free_port

from orchestrator.cli.client import ApiError
from orchestrator.cli.errors import describe
from orchestrator.service.api.app import create_app
from orchestrator.service.store import RunStore

TINY = ROOT / "configs" / "tiny-cpu.toml"


def mathrl(*args: str, url: str | None = None) -> subprocess.CompletedProcess:
    """The real CLI entry point (`main()`), as a process."""
    argv = [*args] if url is None else [*args, "--url", url]
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def plain_failure(out: subprocess.CompletedProcess, code: int = 1) -> str:
    """The failure's stderr, checked to be short, plain and to exit with `code`."""
    assert out.returncode == code, (out.returncode, out.stdout, out.stderr)
    err = out.stderr.strip()
    assert err.startswith("error: "), err
    assert "Traceback" not in err and "File \"" not in err, err
    assert len(err.splitlines()) <= 4, err
    return err


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("api") / "runs.db")
    server = uvicorn.Server(uvicorn.Config(create_app(store), host="127.0.0.1", port=free_port(),
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{server.config.port}"
    server.should_exit = True
    thread.join(10)
    store.close()


def test_no_server_names_the_url_and_what_to_do():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for verb in (["submit", str(TINY)], ["status"], ["status", "abc", "--follow"],
                 ["cancel", "abc"]):
        err = plain_failure(mathrl(*verb, url=url))
        assert url in err and "mathrl up" in err and "MATHRL_URL" in err, (verb, err)
    # --debug, before or after the verb, brings the traceback back.
    for args in (["--debug", "status"], ["status", "--debug"]):
        out = mathrl(*args, url=url)
        assert out.returncode != 0 and "Traceback" in out.stderr and "ConnectError" in out.stderr


def test_rejected_config_names_the_field(api, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY.read_text().replace("group_size = 8", "group_size = 1"))
    err = plain_failure(mathrl("submit", str(bad), url=api))
    assert "HTTP 422" in err and "rollout.group_size" in err, err


def test_unknown_run_is_404(api):
    for verb in (["status", "nope"], ["status", "nope", "--follow"], ["cancel", "nope"]):
        err = plain_failure(mathrl(*verb, url=api))
        assert "no run 'nope'" in err and "HTTP 404" in err, (verb, err)


def test_cancelling_a_finished_run_is_409(api, tiny_model_dir, tmp_path):
    # The API refuses a local model directory that does not exist (TINY names the one that
    # `mathrl up` builds on first use), so this config names the session's tiny model.
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY.read_text().replace('".mathrl/tiny-model"', f'"{tiny_model_dir}"'))
    out = mathrl("submit", str(cfg), url=api)
    assert out.returncode == 0, out.stderr
    run_id = out.stdout.strip()
    first = mathrl("cancel", run_id, url=api)
    assert first.returncode == 0 and first.stdout.split() == [run_id, "cancelled"]
    err = plain_failure(mathrl("cancel", run_id, url=api))
    assert "already cancelled" in err and "HTTP 409" in err, err


def test_broken_local_files_exit_2(api, tmp_path):
    err = plain_failure(mathrl("submit", str(tmp_path / "missing.toml"), url=api), code=2)
    assert "no such file" in err and "missing.toml" in err
    broken = tmp_path / "broken.toml"
    broken.write_text("name = \n")
    err = plain_failure(mathrl("submit", str(broken), url=api), code=2)
    assert "not valid TOML" in err and "broken.toml" in err
    typo = tmp_path / "typo.toml"
    typo.write_text(TINY.read_text().replace("[rollout]", "[rollout]\ngroup_sise = 4"))
    err = plain_failure(mathrl("train", str(typo)), code=2)
    assert "rollout.group_sise" in err and "typo.toml" in err


def test_401_says_which_token():
    failure = describe(ApiError(401, "missing or wrong bearer token"))
    assert failure.code == 1 and "MATHRL_API_TOKEN" in failure.message


def test_a_directory_as_config_is_a_local_file_error():
    err = plain_failure(mathrl("submit", str(Path(ROOT / "configs"))), code=2)
    assert "configs" in err
