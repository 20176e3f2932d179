"""A run trains on rewards it names (issue 25): the example plugin package installed with pip,
a verifier over HTTP on 127.0.0.1, a faulty plugin, and data rows whose extra fields reach the
functions, submitted over REST to the real scheduler on the session's vLLM + Ray stack."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
from conftest import ROOT, run_to_end, tiny_config
from fastapi.testclient import TestClient
from reward_helpers import Verifier, with_fake_plugin

pytestmark = pytest.mark.slow
EXAMPLE = ROOT / "examples" / "mathrl-reward-example"


@pytest.fixture(scope="module")
def example_plugin(tmp_path_factory):
    """`pip install` of examples/mathrl-reward-example into this venv (a few seconds; from a
    copy, so the build's `build/` and `*.egg-info` stay out of the working tree)."""
    src = tmp_path_factory.mktemp("example") / "pkg"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    out = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                          "--no-build-isolation", str(src)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    importlib.invalidate_caches()  # the new package and its entry points, in this process


@pytest.fixture
def fake_plugin(tmp_path):
    undo = with_fake_plugin(tmp_path / "site")
    yield
    undo()


def test_a_run_trains_on_plugin_rewards_and_a_verifier(example_plugin, fake_plugin, stack,
                                                        tiny_model_dir, tmp_path):
    from orchestrator.service.api.app import Service, create_app
    from orchestrator.service.api.limits import ApiPolicy
    from orchestrator.service.scheduler import Scheduler
    from orchestrator.service.store import RunStore

    data = tmp_path / "trips.jsonl"
    data.write_text("".join(json.dumps({"problem": f"A car drives {a} km, then 5 km more. "
                                                   "How far is that?", "answer": a + 5,
                                        "unit": "km"}) + "\n" for a in range(16)))
    verifier = Verifier(lambda it: {"score": float(any(ch.isdigit() for ch in it["completion"])),
                                    "parts": {"saw_unit": float(it["metadata"]["unit"] == "km")}})
    functions = [
        {"name": "digit_share"},
        {"name": "length_penalty", "weight": 0.5, "options": {"target_chars": 20}},
        {"name": "units", "weight": 0.5},
        {"name": "http", "weight": 0.5, "options": {"url": verifier.url, "batch_size": 16}},
        {"name": "flaky", "weight": 0.1, "options": {"marker": str(tmp_path / "hung")}},
    ]
    cfg = tiny_config(tiny_model_dir, name="plugins", schedule__steps=2,
                      generator__port=stack.cfg.generator.port, tracking__backends=[],
                      rollout__prompts_per_step=4, rollout__group_size=4,
                      data__source="math", data__path=str(data),
                      reward__kind="math", reward__timeout_s=1.0, reward__functions=functions)
    store = RunStore(tmp_path / "runs.db")
    hosts = (urlsplit(verifier.url).netloc,)  # 127.0.0.1:<its port>
    scheduler = Scheduler(store, stack, tmp_path / "work", poll_s=0.1, reward_hosts=hosts)
    app = create_app(store, Service(scheduler=scheduler, stack=stack),
                     policy=ApiPolicy(data_roots=(tmp_path,), reward_hosts=hosts))
    with verifier, TestClient(app) as api:
        r = api.post("/runs", json=cfg.model_dump(mode="json"))
        assert r.status_code == 201, r.text
        run_id = r.json()["id"]
        run = run_to_end(store, scheduler, run_id)
        assert run.status == "completed", run.error
        steps = api.get(f"/runs/{run_id}/metrics").json()["steps"]

    assert [s["step"] for s in steps] == [1, 2]
    for s in steps:
        m = s["metrics"]
        # The example plugin's score and part, the verifier's score and part, all in the
        # run's metrics; the reward is the weighted sum of the functions' means.
        assert -1 <= m["reward/length_penalty"] <= 0 and 0 <= m["reward/over_target"] <= 1
        assert 0 <= m["reward/units"] <= 1 and m["reward/saw_unit"] == 1.0
        assert 0 < m["reward/http"] <= 1 and 0 < m["reward/digit_share"] <= 1
        total = (m["reward/digit_share"] + 0.5 * (m["reward/length_penalty"]
                 + m["reward/units"] + m["reward/http"]) + 0.1 * m["reward/flaky"])
        assert m["reward/mean"] == pytest.approx(total)
        assert m["learner/skipped"] == 0  # a real learner step on these rewards
    assert [s["metrics"]["adapter/version"] for s in steps] == [1, 2]
    # flaky hung once (killed at reward.timeout_s) and raised on odd-length completions:
    # counted, scored 0, one note for the run, and the run completed.
    assert sum(s["metrics"]["reward/timeouts"] for s in steps) == 1
    assert all(s["metrics"]["reward/errors"] > 0 for s in steps)
    notes = [e.data["message"] for e in store.events(run_id) if e.kind == "note"]
    assert len([n for n in notes if "'flaky'" in n]) == 1, notes
    # The verifier got every completion with its problem's question and data row fields.
    seen = [item for batch in verifier.batches for item in batch]
    assert len(seen) == 2 * cfg.rollout.prompts_per_step * cfg.rollout.group_size
    assert all(it["metadata"] == {"unit": "km"} and "A car drives" in it["prompt"]
               for it in seen)
    store.close()
