"""Evaluation inside a real run (session vLLM + Ray, the real scheduler): step 0, every N
steps and the end, with the policy being served at that step; stored, streamed, in the API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_to_end, tiny_config

pytestmark = pytest.mark.slow


def test_benchmarks_measured_during_a_run(stack, tiny_model_dir, tmp_path):
    from fastapi.testclient import TestClient

    from orchestrator.service.api.app import create_app
    from orchestrator.service.scheduler import Scheduler
    from orchestrator.service.store import RunStore

    data = tmp_path / "sums.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"What is {a} + 2?", "answer": a + 2})
                              for a in range(3)) + "\n")
    cfg = tiny_config(tiny_model_dir, name="evals", schedule__steps=2,
                      tracking__backends=[],
                      eval__enabled=True, eval__every_n_steps=1, eval__max_new_tokens=8,
                      eval__benchmarks=[{"name": "arith", "limit": 4},
                                        {"name": "sums", "path": str(data), "samples": 2,
                                         "question_field": "question"}])
    store = RunStore(tmp_path / "runs.db")
    run_id = store.create_run(cfg.name, cfg.model_dump(mode="json"), cfg.schedule.steps)
    scheduler = Scheduler(store, stack, tmp_path / "work", poll_s=0.1)
    run = run_to_end(store, scheduler, run_id)
    assert run.status == "completed", run.error

    # Step 0 (before training), every step, and the end: here steps 0, 1 and 2.
    assert [e["step"] for e in run.evals] == [0, 1, 2]
    for e in run.evals:
        assert e["eval/arith/n"] == 4 and e["eval/sums/n"] == 3
        assert e["accuracy"] == e["eval/arith/pass@1"]  # the first benchmark's greedy score
        for key in ("eval/arith/pass@1", "eval/arith/boxed", "eval/sums/pass@1",
                    "eval/sums/mean@2", "eval/sums/maj@2", "eval/sums/pass@2"):
            assert 0.0 <= e[key] <= 1.0
    streamed = [ev.data for ev in store.events(run_id) if ev.kind == "eval"]
    assert streamed == run.evals

    # The API serves the same, and the events stream carries eval/<benchmark>/<metric>.
    with TestClient(create_app(store)) as api:
        assert api.get(f"/runs/{run_id}").json()["evals"] == run.evals
        body = api.get(f"/runs/{run_id}/events").text
        assert body.count("event: eval") == 3 and '"eval/sums/maj@2"' in body

    # Each evaluation used the policy the generator served at that step (no second server).
    for step in (0, 1, 2):
        report = json.loads((Path(run.run_dir) / "evals" / f"step-{step}.json").read_text())
        assert report["model"].endswith(f"-v{step}"), report["model"]
        sums = next(b for b in report["benchmarks"] if b["name"] == "sums")
        assert len(sums["items"]) == 3 and len(sums["items"][0]["samples"]) == 2
    store.close()


def test_ask_the_policy_through_the_api(stack, tmp_path):
    import httpx
    from fastapi.testclient import TestClient

    from orchestrator.service.api.app import Service, create_app
    from orchestrator.service.store import RunStore

    store = RunStore(tmp_path / "runs.db")
    question = {"question": "What is 2 + 2?", "max_tokens": 6}
    with TestClient(create_app(store, Service(stack=stack))) as api:
        r = api.post("/policy/ask", json=question)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] in stack.client.models()
        # The same greedy chat request straight to vLLM's OpenAI API gives the same answer.
        direct = httpx.post(f"{stack.client.base_url}/v1/chat/completions", timeout=60, json={
            "model": body["model"], "messages": [{"role": "user", "content": question["question"]}],
            "max_tokens": 6, "temperature": 0}).json()
        assert body["answer"] == direct["choices"][0]["message"]["content"]
        assert api.post("/policy/ask", json={"question": ""}).status_code == 422
    with TestClient(create_app(store)) as api:  # API-only mode: no generator to ask
        assert api.post("/policy/ask", json=question).status_code == 503
    store.close()


def test_stop_strings_reach_vllm(stack, tiny_model_dir):
    """Few-shot evaluation stops at the next `Q:`; here a digit the random model writes often
    stands in for it: with the stop string no completion contains it, without it some do."""
    from transformers import AutoTokenizer

    from services.schemas import GenerateRequest

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = [tok(f"What is {a} + 1?")["input_ids"] for a in range(8)]
    model = stack.client.models()[0]

    def texts(stop):
        groups = stack.client.generate(GenerateRequest(
            model=model, prompts=prompts, n=2, max_tokens=16, temperature=1.0, stop=stop))
        return [c.text for g in groups for c in g]

    assert any("1" in t for t in texts(None))
    assert not any("1" in t for t in texts(["1"]))
