"""The service end to end: `mathrl up` as a real process (vLLM, Ray, learner, API), runs
submitted over HTTP, followed over SSE, queued, cancelled, and found intact after a restart."""

from __future__ import annotations

import csv
import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, free_port, set_dotted, tiny_config
from tracker_readers import tensorboard_scalars

from orchestrator.cli.client import ApiError, MathrlClient

pytestmark = pytest.mark.slow
TOKEN = "service-test-token"


class Up:
    """`mathrl up` in its own process group, stopped by PID; `token`: its MATHRL_API_TOKEN."""

    def __init__(self, config: Path, home: Path, token: str | None = None,
                 extra: list[str] | None = None):
        self.config, self.home, self.token = config, home, token
        self.extra = extra or []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.proc: subprocess.Popen | None = None

    def start(self) -> MathrlClient:
        log = open(self.home / "up.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "up", "--config", str(self.config),
             "--port", str(self.port), "--db", str(self.home / "runs.db"),
             "--work-dir", str(self.home / "work"), *self.extra],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
            env={**os.environ, "MATHRL_API_TOKEN": self.token or ""})
        log.close()
        client = MathrlClient(self.url, token=self.token)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.home / "up.log").read_text()[-3000:]
            try:
                if client.health()["generator"]:
                    return client
            except (httpx.HTTPError, ApiError):
                pass
            time.sleep(1)
        raise AssertionError("mathrl up did not become healthy")

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)  # the service stops its own children
        try:
            return self.proc.wait(timeout=180)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)


def _toml(cfg) -> str:
    """A RunConfig as TOML (the test writes its own small config file)."""
    import json

    lines = [f"name = {json.dumps(cfg.name)}"]
    for section, values in cfg.model_dump(mode="json").items():
        if not isinstance(values, dict):
            continue
        lines.append(f"[{section}]")
        sub = []
        for k, v in values.items():
            if isinstance(v, dict):
                sub.append((f"{section}.{k}", v))
            elif v is not None:
                lines.append(f"{k} = {json.dumps(v)}")
        for name, table in sub:
            lines.append(f"[{name}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in table.items() if v is not None]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def service(tiny_model_dir, tmp_path_factory):
    home = tmp_path_factory.mktemp("service")
    cfg = tiny_config(tiny_model_dir, schedule__steps=3)
    (home / "stack.toml").write_text(_toml(cfg))
    # With a token: the CLI client, the dashboard and the generator's key all take part.
    up = Up(home / "stack.toml", home, token=TOKEN)
    client = up.start()
    yield up, client, cfg
    client.close()
    up.stop()


def _body(cfg, **changes) -> dict:
    return set_dotted(cfg.model_dump(mode="json"), **changes)


def _wait(client, run_id, pred, timeout_s=240):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = client.run(run_id)
        if pred(run):
            return run
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting on run {run_id}: {client.run(run_id)}")


def test_invalid_config_is_422_naming_the_field(service, tmp_path):
    up, client, cfg = service
    h = up.headers
    r = httpx.post(f"{up.url}/runs", json=_body(cfg, rollout__group_size=1), headers=h)
    assert r.status_code == 422
    assert ["body", "rollout", "group_size"] in [d["loc"] for d in r.json()["detail"]]
    r = httpx.post(f"{up.url}/runs", json={**_body(cfg), "bogus": 1}, headers=h)
    assert r.status_code == 422 and "bogus" in r.text
    r = httpx.post(f"{up.url}/runs", json=_body(cfg, model__name_or_path="/no/such/model"),
                   headers=h)
    assert r.status_code == 422 and "name_or_path" in r.text
    # A data file outside the data folders (the work dir, ./data, ../shared/data) is refused.
    outside = tmp_path / "data.jsonl"
    outside.write_text('{"question": "1+1?", "answer": "#### 2"}\n')
    r = httpx.post(f"{up.url}/runs", headers=h,
                   json=_body(cfg, data__source="gsm8k", data__path=str(outside)))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "data", "path"]
    assert httpx.get(f"{up.url}/runs/nope", headers=h).status_code == 404
    assert httpx.get(f"{up.url}/runs").status_code == 401
    assert httpx.get(f"{up.url}/health").status_code == 200


def test_generator_takes_the_api_token_as_its_key(service):
    """vLLM, launched by `mathrl up`, refuses `/v1` (runtime LoRA loading included) without
    the key; the service's own client sends it (the runs of this module train through it)."""
    up, client, cfg = service
    gen = f"http://127.0.0.1:{cfg.generator.port}"
    assert httpx.get(f"{gen}/v1/models").status_code == 401
    r = httpx.post(f"{gen}/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": "/tmp"})
    assert r.status_code == 401
    assert httpx.get(f"{gen}/v1/models", headers=up.headers).status_code == 200
    assert client.health()["generator"] is True


@pytest.fixture(scope="module")
def first(service):
    """One run of 3 steps followed over SSE to its end: (run id, its events). Every test that
    reads it asks for it, so the tests pass in any order."""
    up, client, cfg = service
    run_id = client.submit(_body(cfg, name="first")).id
    return run_id, list(client.events(run_id))


def test_submit_follow_sse_to_completed(service, first):
    up, client, cfg = service
    run_id, events = first
    statuses = [e.data["status"] for e in events if e.kind == "status"]
    assert statuses == ["queued", "starting", "running", "completed"]
    streamed = {e.step: e.data for e in events if e.kind == "metrics"}
    stored = {s.step: s.metrics for s in client.metrics(run_id).steps}
    assert sorted(stored) == [1, 2, 3]
    assert streamed == stored
    run = client.run(run_id)
    assert run.status == "completed" and run.step == 3 and run.adapter.endswith("-v3")
    assert (Path(run.run_dir) / "adapters" / "step-3" / "adapter_model.safetensors").exists()
    # Resuming with Last-Event-ID replays only what came after it.
    tail = list(client.events(run_id, last_event_id=events[-3].id))
    assert [e.id for e in tail] == [e.id for e in events[-2:]]
    prom = httpx.get(f"{up.url}/metrics", headers=up.headers).text
    assert 'mathrl_runs{status="completed"}' in prom


def test_console_reads_like_a_training_log(service, first):
    """`mathrl up`'s console: status changes and one line per step, no request logs; those go
    to the log file the console names. The default tracker (TensorBoard) got the metrics."""
    up, client, cfg = service
    first = client.run(first[0])
    console = (up.home / "up.log").read_text()
    label = f"run {first.id} (first)"
    for line in (f"{label}: starting (picked from the queue)",
                 f"{label}: running (generator and learner ready)",
                 f"{label}: completed (3 steps)", "mathrl is up: API http://127.0.0.1:"):
        assert line in console, console[-3000:]
    steps = re.findall(rf"^\d\d:\d\d:\d\d {re.escape(label)}: step (\d)/3  reward ",
                       console, re.M)
    assert steps == ["1", "2", "3"], console[-3000:]
    assert "HTTP Request" not in console and '"GET /health' not in console, console[-3000:]
    log_file = up.home / "work" / "logs" / "mathrl.log"
    assert f"logs: {log_file}" in console
    text = log_file.read_text()
    assert "HTTP Request: POST" in text and '"GET /health HTTP/1.1" 200' in text
    scalars = tensorboard_scalars(Path(first.run_dir) / "tensorboard")
    for s in client.metrics(first.id).steps:
        for k, v in s.metrics.items():
            assert scalars[k][s.step] == pytest.approx(v, rel=1e-6), k


def test_csv_export_matches_the_store(service, first):
    up, client, cfg = service
    first = client.run(first[0])
    h = up.headers
    r = httpx.get(f"{up.url}/runs/{first.id}/metrics", params={"format": "csv"}, headers=h)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert f'filename="first-{first.id}-metrics.csv"' in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    stored = client.metrics(first.id).steps
    assert [int(row["step"]) for row in rows] == [s.step for s in stored] == [1, 2, 3]
    for row, s in zip(rows, stored, strict=True):
        assert float(row.pop("at")) == s.at
        assert {k: float(v) for k, v in row.items() if k != "step"} == s.metrics
    assert httpx.get(f"{up.url}/runs/nope/metrics?format=csv", headers=h).status_code == 404
    assert httpx.get(f"{up.url}/runs/{first.id}/metrics?format=xml",
                     headers=h).status_code == 422


def _dashboard_during_live_run(url: str, run_id: str, tmp_path: Path) -> None:
    """The real dashboard, fed by the real SSE stream, draws the live run's charts, once it
    has asked for the API token (its first request got 401) and been given it."""
    from browser import Page, chromium_path
    from PIL import Image

    if chromium_path() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
        return  # the rest of this test still runs; locally chromium is optional
    page = Page(f"{url}/?run={run_id}", tmp_path / "profile")
    try:
        page.wait_for("!document.getElementById('token-form').hidden", timeout_s=30)
        page.evaluate(f"document.getElementById('token-input').value = {TOKEN!r};"
                      "document.getElementById('token-form').requestSubmit()")
        points = page.wait_for(
            "(() => { const p = ['reward', 'tokens', 'loss', 'time']"
            ".map(c => +document.getElementById('chart-' + c).dataset.points);"
            " return p.every(n => n > 0) ? p : null })()",
            timeout_s=60)
        # The live stream itself is open (the charts alone could come from /metrics).
        page.wait_for("document.getElementById('conn').textContent === 'live'", timeout_s=30)
        status = page.evaluate("document.getElementById('status').dataset.status")
        png = page.screenshot(tmp_path / "live.png")
    finally:
        page.close()
    assert status == "running", status
    assert min(points) >= 1
    img = Image.open(png).convert("RGB")
    saturation = img.crop((0, img.height // 2, img.width, img.height)).convert("HSV")
    assert sum(saturation.getchannel("S").histogram()[100:]) > 2000  # coloured series drawn
    if os.environ.get("MATHRL_SAVE_SCREENSHOT"):
        Image.open(png).save(os.environ["MATHRL_SAVE_SCREENSHOT"])


def test_queue_runs_in_order_and_cancel(service, tmp_path):
    up, client, cfg = service
    a = client.submit(_body(cfg, name="a", schedule__steps=400)).id
    b = client.submit(_body(cfg, name="b", schedule__steps=2)).id
    c = client.submit(_body(cfg, name="c", schedule__steps=2)).id
    _wait(client, a, lambda r: r.status == "running" and r.step >= 1)
    assert client.run(b).status == "queued" and client.run(c).status == "queued"
    _dashboard_during_live_run(up.url, a, tmp_path)
    # The page's event stream carried the token in its URL: it is in no log.
    for log in (up.home / "up.log", up.home / "work" / "logs" / "mathrl.log"):
        assert TOKEN not in log.read_text(), log
    assert client.cancel(c).status == "cancelled"  # cancel while queued
    cancelled = client.cancel(a)
    assert cancelled.status == "running"  # stops after its current step
    run_a = _wait(client, a, lambda r: r.status == "cancelled")
    assert 1 <= run_a.step < 400 and "cancel" in run_a.error
    assert (Path(run_a.run_dir) / "adapters" / f"step-{run_a.step}").exists()
    run_b = _wait(client, b, lambda r: r.status == "completed")
    assert run_b.started_at >= run_a.finished_at
    assert client.run(c).status == "cancelled" and client.run(c).started_at is None
    with pytest.raises(ApiError) as e:
        client.cancel(b)
    assert e.value.status == 409


def test_failing_run_records_error_and_service_goes_on(service, tmp_path):
    up, client, cfg = service
    # A data file the API accepts (in the work dir, a data folder) that the loader rejects.
    broken = up.home / "work" / "broken-data.jsonl"
    broken.write_text('{"question": "1+1?", "answer": "2 (a GSM8K answer needs a final line)"}\n')
    bad = client.submit(_body(cfg, name="bad", data__source="gsm8k", data__path=str(broken))).id
    run = _wait(client, bad, lambda r: r.status in ("failed", "completed"))
    assert run.status == "failed"
    assert run.error.startswith("step 0:") and "broken-data.jsonl" in run.error
    reasons = [e.data["reason"] for e in client.events(bad) if e.kind == "status"]
    assert reasons[-1] == "error at step 0"
    # On the console: one line that says why, the traceback only in the log file.
    console = (up.home / "up.log").read_text()
    assert re.search(rf"warning mathrl.run: run {bad} \(bad\): failed \(step 0: "
                     r".*broken-data.jsonl", console), console[-3000:]
    assert "Traceback" not in console
    assert "Traceback" in (up.home / "work" / "logs" / "mathrl.log").read_text()
    ok = client.submit(_body(cfg, name="after-failure", schedule__steps=1)).id
    assert _wait(client, ok, lambda r: r.status in ("failed", "completed")).status == "completed"


def test_restart_keeps_every_run_and_metric(service, first):
    up, client, cfg = service
    before = {r.id: (r.status, r.step) for r in client.runs()}
    metrics_before = {rid: client.metrics(rid).model_dump() for rid in before}
    # Whatever ran before this test (any order): at least `first`, with its 3 steps' metrics.
    assert before[first[0]] == ("completed", 3)
    assert len(metrics_before[first[0]]["steps"]) == 3
    assert up.stop() == 0
    client2 = up.start()
    try:
        after = {r.id: (r.status, r.step) for r in client2.runs()}
        assert after == before
        assert {rid: client2.metrics(rid).model_dump() for rid in after} == metrics_before
        # And the restarted service still runs new work.
        rid = client2.submit(_body(cfg, name="after-restart", schedule__steps=1)).id
        _wait(client2, rid, lambda r: r.status == "completed")
    finally:
        client2.close()
