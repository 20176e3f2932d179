"""Over REST (the real app on 127.0.0.1, no generator needed): a run whose memory plan does not
fit its card, or that asks vLLM for a LoRA rank it does not accept, is a 422 naming the field,
and nothing is stored."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import uvicorn
from conftest import ROOT, free_port

from orchestrator.service.api.app import create_app
from orchestrator.service.store import RunStore
from services.config import load_config

CFG12 = ROOT / "configs" / "qwen2.5-math-1.5b-gsm8k-12gb.toml"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("api") / "runs.db")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(store), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code < 500:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield url
    server.should_exit = True
    thread.join(timeout=10)
    store.close()


def _body(**gpu) -> dict:
    body = load_config(CFG12).model_dump(mode="json")
    body["gpu"].update(gpu)
    return body


def test_plan_that_does_not_fit_is_422_naming_the_setting(api):
    r = httpx.post(f"{api}/runs", json=_body(memory_gb=6.0))
    assert r.status_code == 422, r.text
    (detail,) = r.json()["detail"]
    assert detail["loc"] == ["body", "learner", "micro_batch_tokens"]
    assert "memory plan" in detail["msg"] and "generator.weights" in detail["msg"]
    assert httpx.get(f"{api}/runs").json()["runs"] == []


def test_plan_that_fits_is_accepted(api):
    r = httpx.post(f"{api}/runs", json=_body(memory_gb=12.0))
    assert r.status_code == 201, r.text


def test_unsupported_lora_rank_is_422(api):
    body = _body()
    body["lora"]["rank"] = 24
    body["generator"]["max_lora_rank"] = 24
    r = httpx.post(f"{api}/runs", json=body)
    assert r.status_code == 422
    locs = [d["loc"] for d in r.json()["detail"]]
    assert ["body", "generator", "max_lora_rank"] in locs
    assert "32" in r.text  # the rank to use instead
