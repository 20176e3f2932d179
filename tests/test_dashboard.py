"""The dashboard page (orchestrator/service/static) in headless Chromium, against a stand-in
API.

The stand-in is a tiny FastAPI app that serves the REST/SSE contract of
`orchestrator/service/api/schemas.py` (every payload goes through those models), so the page
is checked in isolation from the real scheduler: a queued run, a live run that streams ~10
metrics events 0.2 s apart and then completes, a finished run with evals and a failed run.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import re
import shutil
import subprocess
import threading
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from orchestrator.service.api.schemas import TERMINAL, Event, MetricsPublic, RunPublic, RunsPublic

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "orchestrator" / "service" / "static"
CHARTS = ("chart-reward", "chart-tokens", "chart-loss", "chart-time")
WIDTH, HEIGHT = 1280, 1000


def fake_metrics(step: int, rng: random.Random) -> dict[str, float]:
    """One step's metrics with the loop's keys and plausible values."""
    p = 1 - math.exp(-step / 25)
    acc = min(1.0, max(0.0, 0.15 + 0.5 * p + rng.uniform(-0.05, 0.05)))
    t = {"time/generate": 1.6 + rng.uniform(-0.2, 0.3), "time/reward": 0.05 + rng.uniform(0, 0.04),
         "time/learn": 2.1 + rng.uniform(-0.2, 0.2), "time/sync": 0.12 + rng.uniform(0, 0.05)}
    tokens = 190 - 60 * p + rng.uniform(-8, 8)
    return {
        "reward/mean": acc + 0.1 * (0.6 + 0.4 * p), "reward/std": 0.3 + rng.uniform(-0.05, 0.05),
        "reward/accuracy": acc, "reward/format": 0.6 + 0.4 * p,
        "completion/mean_tokens": tokens, "completion/clipped_frac": 0.2 * (1 - p),
        "loss/policy": rng.uniform(-0.02, 0.02), "loss/kl": 0.004 * p + rng.uniform(0, 0.0008),
        "optim/grad_norm": 0.3 + rng.uniform(0, 0.2), "optim/lr": 1e-5, **t,
        "time/step": sum(t.values()), "perf/rollout_tokens_per_s": 64 * tokens / t["time/generate"],
        "adapter/version": float(step),
    }


class FakeApi:
    """In-memory runs + events; a 'live' run is advanced by a thread once its stream is opened."""

    def __init__(self, live_steps: int = 10, interval: float = 0.2):
        self.live_steps, self.interval = live_steps, interval
        self.lock = threading.Lock()
        now = time.time()
        self.runs: dict[str, dict] = {}
        self.events: dict[str, list[Event]] = {}
        self.steps: dict[str, list[dict]] = {}
        self.started: set[str] = set()
        # run id -> (events per connection, SSE `retry:` ms): the server ends that run's stream
        # early, as a proxy might, and the page must reconnect with Last-Event-ID. A long retry
        # leaves no fetch pending, so Chromium's virtual time runs out while the run is live.
        self.chunks: dict[str, tuple[int, int]] = {"run-live-a": (5, 100),
                                                   "run-live-b": (6, 30_000)}
        self.resumed: list[tuple[str, int]] = []  # (run id, Last-Event-ID) of reconnections
        self._add("run-queued", "qwen2.5-1.5b-math-lr2e-5", "queued", 50, now - 5)
        self._add("run-live-a", "qwen2.5-0.5b-gsm8k", "running", live_steps, now - 60)
        self._add("run-live-b", "qwen2.5-0.5b-gsm8k-b", "running", live_steps, now - 120)
        self._add("run-done", "qwen2.5-0.5b-baseline", "running", 20, now - 3600)
        self._add("run-failed", "qwen2.5-3b-oom", "running", 100, now - 7200)
        for i in range(1, 21):
            self._step("run-done", i)
        self._eval("run-done", 10, 0.41, 0.88)
        self._eval("run-done", 20, 0.52, 0.95)
        self._finish("run-done", "completed")
        for i in range(1, 4):
            self._step("run-failed", i)
        self._finish("run-failed", "failed", "CUDA out of memory at step 4 (learner)")

    def _add(self, rid, name, status, total, created):
        started = None if status == "queued" else created
        self.runs[rid] = dict(id=rid, name=name, status=status, step=0, total_steps=total,
                              created_at=created, started_at=started, adapter=None,
                              run_dir=f"/runs/{rid}", evals=[], latest_metrics={})
        self.events[rid], self.steps[rid] = [], []
        if status != "queued":
            self._emit(rid, "status", 0, {"status": status, "reason": "learner ready"})

    def _emit(self, rid, kind, step, data):
        with self.lock:
            evs = self.events[rid]
            evs.append(Event(id=len(evs) + 1, run_id=rid, kind=kind, step=step, data=data,
                             at=time.time()))

    def _step(self, rid, step):
        m = fake_metrics(step, random.Random(f"{rid}-{step}"))
        run = self.runs[rid]
        self.steps[rid].append({"step": step, "metrics": m, "at": time.time()})
        run.update(step=step, latest_metrics=m, adapter=f"{rid}-v{step}")
        self._emit(rid, "metrics", step, m)

    def _eval(self, rid, step, acc, fmt):
        e = {"step": step, "accuracy": acc, "format": fmt, "n": 200,
             "eval/gsm8k/pass@1": acc, "eval/gsm8k/maj@4": min(1.0, acc + 0.05),
             "eval/gsm8k/n": 200, "eval/math500/pass@1": acc / 2}
        self.runs[rid]["evals"].append(e)
        self._emit(rid, "eval", step, e)

    def _finish(self, rid, status, error=None):
        run = self.runs[rid]
        run.update(status=status, finished_at=time.time(), error=error)
        reason = f"error at step {run['step'] + 1}" if error else f"{run['step']} steps"
        self._emit(rid, "status", run["step"], {"status": status, "reason": reason})

    def _train(self, rid):
        for i in range(1, self.live_steps + 1):
            time.sleep(self.interval)
            self._step(rid, i)
            if i % 10 == 0:
                self._eval(rid, i, 0.3 + 0.1 * math.log1p(i / 10), 0.8 + 0.01 * i ** 0.5)
        self._finish(rid, "completed")

    def start(self, rid):
        with self.lock:
            if self.runs[rid]["status"] != "running" or rid in self.started:
                return
            self.started.add(rid)
        threading.Thread(target=self._train, args=(rid,), daemon=True).start()

    def app(self) -> FastAPI:
        app = FastAPI()
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

        def run_or_404(rid: str) -> dict:
            if rid not in self.runs:
                raise HTTPException(404, f"no run {rid}")
            return self.runs[rid]

        @app.get("/")
        def index():
            return FileResponse(STATIC / "index.html")

        @app.get("/runs")
        def runs():
            ordered = sorted(self.runs.values(), key=lambda r: -r["created_at"])
            return RunsPublic(runs=[RunPublic(**r) for r in ordered]).model_dump()

        @app.get("/runs/{rid}")
        def run(rid: str):
            return RunPublic(**run_or_404(rid)).model_dump()

        @app.get("/runs/{rid}/metrics")
        def metrics(rid: str):
            run_or_404(rid)
            return MetricsPublic(run_id=rid, steps=list(self.steps[rid])).model_dump()

        @app.get("/runs/{rid}/events")
        async def events(rid: str, request: Request):
            run_or_404(rid)
            self.start(rid)
            after = int(request.headers.get("last-event-id") or 0)
            if after:
                self.resumed.append((rid, after))

            chunk, retry = self.chunks.get(rid, (None, 0))

            async def stream():
                i, sent = after, 0
                if retry:
                    yield f"retry: {retry}\n\n"
                while True:
                    evs = self.events[rid]
                    while i < len(evs):
                        ev = evs[i]
                        i, sent = i + 1, sent + 1
                        yield f"id: {ev.id}\nevent: {ev.kind}\ndata: {ev.model_dump_json()}\n\n"
                        if ev.kind == "status" and ev.data["status"] in TERMINAL:
                            return
                        if chunk and sent >= chunk:
                            return
                    await asyncio.sleep(0.05)

            return StreamingResponse(stream(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})

        return app


class ServerThread:
    """uvicorn on 127.0.0.1:<free port> in a daemon thread."""

    def __init__(self, app: FastAPI):
        cfg = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                             lifespan="off", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(5)


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def chromium_args(profile: Path, budget_ms: int, *extra: str) -> list[str]:
    """Flags for one headless Chromium shot: no network noise, fixed window, virtual time.

    Virtual time stands still while a fetch is pending, so an open SSE stream holds the budget
    until the stream ends. `--run-all-compositor-stages-before-draw` keeps frames in step with
    virtual time: without it `--screenshot` now and then waits forever for a frame.
    """
    return ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--hide-scrollbars", "--run-all-compositor-stages-before-draw",
            f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}",
            f"--virtual-time-budget={budget_ms}", *extra]


def run_chromium(url: str, profile: Path, budget_ms: int, *extra: str) -> str:
    """Load `url`, let `budget_ms` of virtual time pass, run `extra` commands; return stdout."""
    cmd = [chromium_path(), *chromium_args(profile, budget_ms, *extra), url]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=40)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"chromium hung: {' '.join(cmd)}\n{(e.stderr or b'')[-2000:]!r}")
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


class DomScan(HTMLParser):
    """Collects the attributes the tests look at from a --dump-dom page."""

    def __init__(self, html: str):
        super().__init__()
        self.canvas: dict[str, int] = {}
        self.series: dict[str, int] = {}
        self.hidden: set[str] = set()
        self.status: str | None = None
        self.rows: list[str] = []
        self.selected: list[str] = []
        self.evals_shown = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "canvas":
            self.canvas[a.get("id", "")] = int(a.get("data-points", "0"))
            self.series[a.get("id", "")] = int(a.get("data-series", "0"))
        elif a.get("id") == "status":
            self.status = a.get("data-status")
        elif a.get("id") == "evals-card":
            self.evals_shown = "hidden" not in a
        if "hidden" in a and a.get("id"):
            self.hidden.add(a["id"])
        elif tag == "tr" and "data-run" in a:
            self.rows.append(a["data-run"])
            if "selected" in (a.get("class") or "").split():
                self.selected.append(a["data-run"])


@pytest.fixture
def fake():
    """A fresh stand-in API per test, `.url` set while its server runs."""
    if chromium_path() is None:
        msg = "chromium is not installed (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    api = FakeApi()
    with ServerThread(api.app()) as api.url:
        yield api


def test_live_run_streams_to_completion(fake, tmp_path):
    """Default selection = newest running run; charts fill from SSE (across reconnections);
    the final status is shown."""
    html = run_chromium(fake.url + "/", tmp_path / "profile", 6000, "--dump-dom")
    dom = DomScan(html)
    assert dom.rows == ["run-queued", "run-live-a", "run-live-b", "run-done", "run-failed"]
    assert dom.selected == ["run-live-a"]
    assert dom.status == "completed"
    assert {c: dom.canvas.get(c) for c in CHARTS} == {c: 10 for c in CHARTS}
    assert dom.evals_shown and "<td>10</td>" in html  # the eval event at step 10
    assert "10 steps" in html and 'class="error"' not in html  # a reason, not an error
    # The server cut the stream every 5 events; the page resumed each time after the last id.
    assert [after for rid, after in fake.resumed if rid == "run-live-a"] == [5, 10]


def test_failed_run_by_url(fake, tmp_path):
    """`/?run=<id>` selects that run; a finished run is drawn from the replayed events."""
    html = run_chromium(fake.url + "/?run=run-failed", tmp_path / "p", 1500, "--dump-dom")
    dom = DomScan(html)
    assert dom.selected == ["run-failed"]
    assert dom.status == "failed"
    assert all(dom.canvas[c] == 3 for c in CHARTS)
    assert "CUDA out of memory at step 4" in html


def test_benchmark_curves_of_a_finished_run(fake, tmp_path):
    """Each `eval/<benchmark>/<metric>` accuracy is a curve over the evaluated steps; sizes
    (`eval/gsm8k/n`) are not drawn; the "ask the policy" box is on the page."""
    html = run_chromium(fake.url + "/?run=run-done", tmp_path / "p", 1500, "--dump-dom")
    dom = DomScan(html)
    assert dom.selected == ["run-done"]
    assert "evals-chart-card" not in dom.hidden
    assert dom.canvas["chart-evals"] == 2 and dom.series["chart-evals"] == 3
    assert 'id="ask-form"' in html and 'id="ask-q"' in html


def test_screenshot_mid_stream(fake, tmp_path):
    from PIL import Image

    png = tmp_path / "dash.png"
    dom = DomScan(run_chromium(fake.url + "/?run=run-live-b", tmp_path / "profile", 1000,
                               "--dump-dom", f"--screenshot={png}"))
    assert dom.status == "running"  # taken mid-stream
    assert all(0 < dom.canvas[c] < 10 for c in CHARTS), dom.canvas
    assert png.exists()
    img = Image.open(png).convert("RGB")
    assert img.size == (WIDTH, HEIGHT)
    # The charts fill the lower half of the window; the page around them is white and grey, so
    # count saturated (series-coloured) pixels there: lines, markers, bars and legend swatches.
    saturation = img.crop((0, HEIGHT // 2, WIDTH, HEIGHT)).convert("HSV").getchannel("S")
    colored = sum(saturation.histogram()[100:])
    assert colored > 5000, colored


def _colour_pixels(png: Path, box: dict, rgb: tuple[int, int, int], tol: int = 40) -> int:
    """Pixels within `tol` of `rgb` (per channel) inside the page rectangle `box`."""
    from PIL import Image

    img = Image.open(png).convert("RGB").crop(
        (int(box["x"]), int(box["y"]), int(box["x"] + box["width"]),
         int(box["y"] + box["height"])))
    raw = img.tobytes()
    return sum(1 for i in range(0, len(raw), 3)
               if all(abs(raw[i + c] - rgb[c]) <= tol for c in range(3)))


def test_compare_two_runs_overlays_their_curves(fake, tmp_path):
    """A person ticks two runs in the table: every comparison chart draws both runs' curves,
    each in its own colour, the selected run stays as it was, and the URL links the view."""
    from browser import Page

    page = Page(fake.url + "/?run=run-done", tmp_path / "profile")
    try:
        page.wait_for("document.querySelectorAll('#runs input.cmp').length === 5")
        assert page.evaluate("document.getElementById('compare').hidden")  # nothing ticked
        for rid in ("run-done", "run-failed"):
            page.evaluate(f"document.querySelector('tr[data-run=\"{rid}\"] input.cmp').click()")
        charts = page.wait_for(
            "(() => { const c = [...document.querySelectorAll('#compare canvas')]"
            ".map(x => [x.id, +x.dataset.series, +x.dataset.points]);"
            " return c.every(x => x[1] === 2) ? c : null })()", timeout_s=20)
        legend = page.evaluate("[...document.querySelectorAll('#compare-runs li')]"
                               ".map(li => li.dataset.run)")
        query = page.evaluate("new URL(location.href).searchParams.get('compare')")
        selected = page.evaluate("document.querySelector('#runs tr.selected').dataset.run")
        box = page.evaluate("(() => { const r = document.getElementById('compare')"
                            ".getBoundingClientRect(); return {x: r.x, y: r.y, width: r.width,"
                            " height: r.height} })()")
        png = page.screenshot(tmp_path / "compare.png")
    finally:
        page.close()
    # run-done has 20 steps, run-failed 3: both curves on each of the four charts.
    assert [(c[1], c[2]) for c in charts] == [(2, 23)] * 4, charts
    assert legend == ["run-done", "run-failed"]
    assert query == "run-done,run-failed"
    assert selected == "run-done"  # ticking a box does not select its row
    # The first two palette colours (blue #2563eb, red #dc2626) are both drawn in the card.
    assert _colour_pixels(png, box, (0x25, 0x63, 0xEB)) > 300
    assert _colour_pixels(png, box, (0xDC, 0x26, 0x26)) > 300


def test_compare_from_url(fake, tmp_path):
    """`/?compare=a,b` opens the comparison directly (a link someone shared)."""
    html = run_chromium(fake.url + "/?compare=run-done,run-failed", tmp_path / "p", 1500,
                        "--dump-dom")
    counts = dict(re.findall(r'id="(cmp-[a-z]+)"[^>]*data-series="(\d+)"', html))
    assert counts == {c: "2" for c in ("cmp-reward", "cmp-accuracy", "cmp-tokens", "cmp-time")}
    assert 'href="/runs/run-done/metrics?format=csv"' in html
