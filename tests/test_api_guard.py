"""The API facing a client it does not trust: the bearer token on every route but /health, a
body size limit, data files only from the data folders, model names checked without a hub
lookup, bounded work per run, and an event stream that ends. The real app and run store,
served on 127.0.0.1 (API-only: no generator needed)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import httpx
import pytest
from api_server import served
from conftest import ROOT, set_dotted
from fastapi.routing import APIRoute

from orchestrator.cli.client import ApiError, MathrlClient
from orchestrator.service.api.app import create_app
from orchestrator.service.api.auth import exposure_warning
from orchestrator.service.api.limits import ApiPolicy
from orchestrator.service.store import RunStore
from services.config import load_config

TOKEN = "s3cret-token"
TINY = ROOT / "configs" / "tiny-cpu.toml"
PUBLIC = {("GET", "/health"), ("GET", "/")}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    (d / "ok.jsonl").write_text('{"question": "1+1?", "answer": "#### 2"}\n')
    (d / "sub").mkdir()
    (d / "escape.jsonl").symlink_to("/etc/hostname")
    os.mkfifo(d / "pipe.jsonl")
    return d


@pytest.fixture(scope="module")
def api(tmp_path_factory, data_dir):
    store = RunStore(tmp_path_factory.mktemp("api") / "runs.db")
    policy = ApiPolicy(token=TOKEN, max_body_bytes=64 * 1024, data_roots=(data_dir,),
                       max_sequences_per_step=1024, max_eval_problems=500)
    app = create_app(store, policy=policy)
    with served(app) as url:
        yield url, app, store
    store.close()


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def body(**changes) -> dict:
    cfg = load_config(TINY).model_dump(mode="json")
    cfg["model"]["name_or_path"] = "Qwen/Qwen2.5-0.5B"  # a hub id: its form is all that counts
    return set_dotted(cfg, **changes)


def status_of(method: str, url: str, **kw) -> int:
    """The status line only: an event stream is not read to its end."""
    with httpx.stream(method, url, timeout=10, **kw) as r:
        return r.status_code


def test_every_route_but_health_needs_the_token(api):
    url, app, store = api
    rid = store.create_run("t", body(), 3)
    store.set_status(rid, "completed", "done")  # its event stream ends at once
    routes = [(m, r.path) for r in app.routes if isinstance(r, APIRoute) for m in r.methods]
    assert ("POST", "/runs") in routes and ("GET", "/metrics") in routes
    for method, path in routes:
        target = url + path.format(run_id=rid, eval_id="none")
        if (method, path) in PUBLIC:
            assert status_of(method, target) == 200, path
            continue
        for headers in ({}, auth("wrong"), {"Authorization": f"Basic {TOKEN}"}):
            with httpx.stream(method, target, headers=headers, timeout=10) as r:
                assert r.status_code == 401, (method, path, headers)
                assert r.headers["www-authenticate"] == "Bearer"
        assert status_of(method, target, headers=auth()) != 401, (method, path)
    # The dashboard's own files load without it (the page then asks for the token).
    assert status_of("GET", f"{url}/static/auth.js") == 200


def test_event_stream_takes_the_token_as_a_query_parameter_and_never_logs_it(api, caplog):
    url, app, store = api
    rid = store.create_run("t", body(), 3)
    store.set_status(rid, "completed", "done")
    assert status_of("GET", f"{url}/runs/{rid}/events?token=wrong") == 401
    assert status_of("GET", f"{url}/runs?token={TOKEN}") == 401  # only the stream takes it
    with caplog.at_level(logging.INFO, logger="uvicorn.access"), \
            served(app, log_level="info", access_log=True, log_config=None) as logged:
        r = httpx.get(f"{logged}/runs/{rid}/events?after=0&token={TOKEN}", timeout=10)
        assert r.status_code == 200 and "event: status" in r.text
        deadline = time.monotonic() + 5
        while "/events" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    assert f"/runs/{rid}/events?after=0" in caplog.text
    assert TOKEN not in caplog.text


def test_clients_send_the_token(api, monkeypatch):
    url, _, _ = api
    assert MathrlClient(url, token=TOKEN).runs() is not None
    monkeypatch.delenv("MATHRL_API_TOKEN", raising=False)
    with pytest.raises(ApiError) as e:
        MathrlClient(url).runs()
    assert e.value.status == 401
    monkeypatch.setenv("MATHRL_API_TOKEN", TOKEN)
    assert MathrlClient(url).runs() is not None  # the CLI's default: the server's variable
    env = {**os.environ, "MATHRL_API_TOKEN": TOKEN}
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "status", "--url", url],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    env.pop("MATHRL_API_TOKEN")
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "status", "--url", url],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 1 and "MATHRL_API_TOKEN" in out.stderr, out.stderr


def test_body_over_the_limit_is_413(api):
    url, _, store = api
    before = len(store.list())
    big = body(name="big", data__instruction="x" * 70_000)
    r = httpx.post(f"{url}/runs", json=big, headers=auth())
    assert r.status_code == 413 and "65536" in r.text

    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"name": "big", "data": {"instruction": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}}'

    r = httpx.post(f"{url}/runs", content=chunks(), headers=auth())
    assert r.status_code == 413
    assert len(store.list()) == before
    assert httpx.post(f"{url}/runs", json=body(), headers=auth()).status_code == 201


def _refused(url: str, field: str, **changes) -> str:
    r = httpx.post(f"{url}/runs", json=body(**changes), headers=auth(), timeout=10)
    assert r.status_code == 422, (changes, r.text)
    (detail,) = r.json()["detail"]
    assert detail["loc"] == ["body", *field.split(".")], (changes, detail)
    return detail["msg"]


def test_data_and_eval_files_come_from_the_data_folders(api, data_dir):
    url, _, _ = api
    for source, field in (("data", "data.path"), ("eval", "eval.path")):
        src = {f"{source}__source": "gsm8k"}
        assert "not a regular file" in _refused(url, field, **src, **{
            f"{source}__path": "/dev/zero"})
        assert "outside the data folders" in _refused(url, field, **src, **{
            f"{source}__path": "/etc/passwd"})
        assert "outside the data folders" in _refused(url, field, **src, **{
            f"{source}__path": str(data_dir / "escape.jsonl")})  # a symlink out
        assert "not a regular file" in _refused(url, field, **src, **{
            f"{source}__path": str(data_dir / "pipe.jsonl")})
        assert "not a regular file" in _refused(url, field, **src, **{
            f"{source}__path": str(data_dir / "sub")})
        assert "no such file" in _refused(url, field, **src, **{
            f"{source}__path": str(data_dir / "missing.jsonl")})
        assert "no such file" in _refused(url, field, **src, **{
            f"{source}__path": str(data_dir / ".." / data_dir.name / "nul\x00.jsonl")})
    ok = body(data__source="gsm8k", data__path=str(data_dir / "ok.jsonl"),
              eval__source="math", eval__path=str(data_dir / "ok.jsonl"))
    assert httpx.post(f"{url}/runs", json=ok, headers=auth()).status_code == 201
    # A Hugging Face dataset is a name: its form is checked, nothing is fetched.
    assert "dataset id" in _refused(url, "data.path", data__source="hf",
                                    data__path="../../etc/passwd")
    hf = body(data__source="hf", data__path="openai/gsm8k:main")
    assert httpx.post(f"{url}/runs", json=hf, headers=auth()).status_code == 201


def test_model_names_are_checked_without_a_hub_lookup(api, tmp_path):
    url, _, _ = api
    msg = _refused(url, "model.name_or_path", model__name_or_path="/no/such/model")
    assert "no directory '/no/such/model'" in msg and "org/name" in msg
    _refused(url, "model.name_or_path", model__name_or_path=".mathrl/not-built-yet")
    (tmp_path / "weights.bin").write_bytes(b"")
    assert "a file" in _refused(url, "model.name_or_path",
                                model__name_or_path=str(tmp_path / "weights.bin"))
    # A well-formed id that does not exist is accepted at once: the scheduler finds out.
    t0 = time.monotonic()
    r = httpx.post(f"{url}/runs", json=body(model__name_or_path="no-such-org/no-such-model"),
                   headers=auth())
    assert r.status_code == 201 and time.monotonic() - t0 < 2


def test_work_per_run_is_bounded(api):
    url, _, _ = api
    msg = _refused(url, "rollout.prompts_per_step", rollout__prompts_per_step=4096,
                   rollout__group_size=256)
    assert "1048576 sequences" in msg and "1024" in msg
    assert "500" in _refused(url, "eval.limit", eval__limit=1_000_000)
    ok = body(rollout__prompts_per_step=128, rollout__group_size=8, eval__limit=500)
    assert httpx.post(f"{url}/runs", json=ok, headers=auth()).status_code == 201


def test_a_stream_resumed_after_the_end_closes(api):
    url, _, store = api
    rid = store.create_run("t", body(), 3)
    store.set_status(rid, "cancelled", "cancelled while queued")
    last = store.events(rid)[-1].id
    client = MathrlClient(url, token=TOKEN, stream_idle_s=5)
    assert list(client.events(rid, last_event_id=last)) == []  # ends, no ReadTimeout


def test_exposure_warning():
    assert exposure_warning("127.0.0.1", None) is None
    assert exposure_warning("::1", None) is None and exposure_warning("localhost", None) is None
    assert "MATHRL_API_TOKEN" in exposure_warning("0.0.0.0", None)
    assert "MATHRL_API_TOKEN" in exposure_warning("my-host", None)
    assert exposure_warning("0.0.0.0", "t") is None


def test_up_warns_and_names_a_missing_model(tmp_path):
    """`mathrl up` on all interfaces without a token warns; a config whose local model is
    missing fails with one line naming it (no hub lookup, nothing started)."""
    cfg = tmp_path / "missing.toml"
    cfg.write_text(TINY.read_text().replace('".mathrl/tiny-model"', '"/no/such/model"'))
    env = {k: v for k, v in os.environ.items() if k != "MATHRL_API_TOKEN"}
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "up", "--config", str(cfg), "--host",
         "0.0.0.0", "--db", str(tmp_path / "db"), "--work-dir", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "without a token" in out.stdout + out.stderr
    err = out.stderr.strip().splitlines()
    assert err[-1].startswith("error: ") and "model.name_or_path" in err[-1], err
    assert "/no/such/model" in err[-1] and "Traceback" not in out.stderr


def test_a_fresh_checkout_builds_the_tiny_model_for_its_config(tmp_path, monkeypatch):
    """`mathrl up --config configs/tiny-cpu.toml` in a fresh checkout: the tiny model the
    config names is built, as for `mathrl up` without --config."""
    from orchestrator.service.server import stack_config
    from orchestrator.service.settings import Settings

    monkeypatch.chdir(tmp_path)
    cfg = stack_config(Settings(config=TINY))
    assert (tmp_path / ".mathrl" / "tiny-model" / "config.json").is_file()
    assert cfg.model.name_or_path == ".mathrl/tiny-model"


def test_up_needs_no_configs_folder_beside_an_installed_package(tmp_path, monkeypatch):
    """An installed (non-editable) mathrl, as in the images, has no configs/ beside its
    package: `--config` must work without the default config file (the CPU compose stack's
    orchestrator failed so), and the tiny model it names is still the one built on first use."""
    from orchestrator.service import server
    from orchestrator.service.settings import Settings

    assert load_config(server.DEFAULT_CONFIG).model.name_or_path == str(server.TINY_MODEL)
    monkeypatch.setattr(server, "DEFAULT_CONFIG", tmp_path / "site-packages" / "tiny-cpu.toml")
    monkeypatch.chdir(tmp_path)
    cfg = server.stack_config(Settings(config=TINY))
    assert (tmp_path / ".mathrl" / "tiny-model" / "config.json").is_file()
    assert cfg.model.name_or_path == ".mathrl/tiny-model"


def test_event_ids_past_sqlite_integers_are_422(api):
    """Found by tests/test_api_fuzz.py: a resume id past 2**63 - 1 broke the open stream."""
    url, _, store = api
    rid = store.create_run("t", body(), 3)
    store.set_status(rid, "completed", "done")
    huge = str(2**64)
    assert httpx.get(f"{url}/runs/{rid}/events?after={huge}", headers=auth()).status_code == 422
    r = httpx.get(f"{url}/runs/{rid}/events", headers={**auth(), "Last-Event-ID": huge})
    assert r.status_code == 422
