"""The `http` reward against a verifier on 127.0.0.1 (batches, retries, a bound on requests in
flight, failures that cost only their items), the hosts a service allows, what `POST /runs`
refuses about reward functions (422 naming the field), and `mathrl rewards`."""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

import pytest
from conftest import ROOT, free_port, set_dotted
from fastapi.testclient import TestClient
from reward_helpers import Verifier, with_fake_plugin
from typer.testing import CliRunner

from orchestrator.service.api.app import create_app
from orchestrator.service.api.limits import ApiPolicy
from orchestrator.service.store import RunStore
from services.config import load_config
from services.rewards.http_verifier import (
    HttpOptions,
    HttpVerifier,
    VerifierTimeout,
    host_problem,
)


def items(n: int) -> list[dict]:
    return [{"prompt": f"q{i}", "completion": f"c{i}", "gold": str(i), "metadata": {"i": i}}
            for i in range(n)]


def test_batches_in_order_within_the_concurrency_bound_and_retried():
    score = lambda it: it["metadata"]["i"] / 10 if it["gold"] != "3" else {  # noqa: E731
        "score": 1.0, "parts": {"judged": 2}}
    with Verifier(score, fail_first=1, delay_s=0.3) as v:
        verifier = HttpVerifier(HttpOptions(url=v.url, batch_size=3, max_concurrency=2,
                                            retries=2), backoff_s=0.01)
        try:
            got = verifier.score(items(10))
        finally:
            verifier.close()
    assert got[:3] == [(0.0, {}), (0.1, {}), (0.2, {})] and got[3] == (1.0, {"judged": 2.0})
    assert got[9] == (0.9, {})
    assert [len(b) for b in sorted(v.batches, key=lambda b: b[0]["gold"])] == [3, 3, 3, 1]
    assert v.posts == 5  # 4 batches, one of them twice (the first answer was a 500)
    assert v.max_in_flight == 2  # concurrent, and never more than max_concurrency
    assert v.batches[0][0].keys() == {"prompt", "completion", "gold", "metadata"}


def test_failures_cost_their_items_only():
    # A 4xx is not retried: the verifier refuses what we send.
    with Verifier(fail_first=99, fail_status=400) as v:
        verifier = HttpVerifier(HttpOptions(url=v.url, retries=3), backoff_s=0.01)
        got = verifier.score(items(2))
        verifier.close()
    assert v.posts == 1 and all(isinstance(g, RuntimeError) and "400" in str(g) for g in got)
    assert "try again" not in str(got[0])  # its status only: a body could be anything
    # Too slow: each attempt times out; bounded by attempts x timeout_s.
    with Verifier(delay_s=1.0) as v:
        verifier = HttpVerifier(HttpOptions(url=v.url, timeout_s=0.2, retries=1), backoff_s=0)
        t0 = time.monotonic()
        got = verifier.score(items(1))
        verifier.close()
    assert isinstance(got[0], VerifierTimeout) and time.monotonic() - t0 < 1.5
    # One malformed score costs only its item.
    with Verifier(lambda it: "x" if it["gold"] == "1" else 1) as v:
        verifier = HttpVerifier(HttpOptions(url=v.url))
        got = verifier.score(items(3))
        verifier.close()
    assert got[0] == (1.0, {}) == got[2] and isinstance(got[1], ValueError)
    # Nobody listening: a connection error, not an exception out of score().
    closed = HttpVerifier(HttpOptions(url=f"http://127.0.0.1:{free_port()}/", retries=0))
    assert isinstance(closed.score(items(1))[0], Exception)
    closed.close()


def test_only_the_hosts_the_operator_lists():
    assert host_problem("http://127.0.0.1/x", ["127.0.0.1"]) is None
    assert host_problem("https://judge.local/", ["judge.local"]) is None
    # A bare host is its scheme's default port only: not vLLM, the API or Ray beside it.
    assert "not allowed" in host_problem("http://127.0.0.1:9/x", ["127.0.0.1"])
    assert "not allowed" in host_problem("http://judge.local:443/", ["judge.local"])
    assert "not a number" in host_problem("http://127.0.0.1:99999/", ["127.0.0.1"])
    assert host_problem("http://Judge.Local:8080/", ["judge.local:8080"]) is None
    assert host_problem("https://judge.local/", ["judge.local:443"]) is None
    assert "not allowed" in host_problem("http://judge.local:8081/", ["judge.local:8080"])
    assert "not allowed" in host_problem("http://127.0.0.2/", ["127.0.0.1", "localhost"])
    assert "(now: none)" in host_problem("http://127.0.0.1/", [])
    with pytest.raises(ValueError):
        HttpOptions(url="file:///etc/passwd")
    with pytest.raises(ValueError):
        HttpOptions(url="http://user:pw@127.0.0.1/")
    for bad_port in ("99999", "abc", "0"):  # refused by the options (a 422), not a 500
        with pytest.raises(ValueError, match="port"):
            HttpOptions(url=f"http://127.0.0.1:{bad_port}/")


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    undo = with_fake_plugin(tmp_path_factory.mktemp("site"))
    yield
    undo()


def body(**changes) -> dict:
    cfg = load_config(ROOT / "configs" / "tiny-cpu.toml").model_dump(mode="json")
    cfg["model"]["name_or_path"] = "Qwen/Qwen2.5-0.5B"  # API-only: its form is all that counts
    cfg["reward"] = {"num_workers": 1}
    return set_dotted(cfg, **changes)


def test_submit_refuses_what_the_service_cannot_score(plugin, tmp_path):
    store = RunStore(tmp_path / "runs.db")
    down_port = free_port()

    def post(policy, *functions):
        with TestClient(create_app(store, policy=policy)) as api:
            r = api.post("/runs", json=body(reward__functions=list(functions)))
        return r.status_code, (r.json()["detail"][0] if r.status_code == 422 else r.json())

    def loc(*path):
        return ["body", "reward", "functions", *path]

    allowed = ApiPolicy(reward_hosts=(f"127.0.0.1:{down_port}",))
    code, d = post(allowed, {"name": "math"}, {"name": "nope"})
    assert code == 422 and d["loc"] == loc("1", "name") and "installed" in d["msg"]
    code, d = post(allowed, {"name": "math", "options": {"grading": "loose"}})
    assert code == 422 and d["loc"] == loc("0", "options", "grading")
    code, d = post(allowed, {"name": "flaky", "options": {}})  # a plugin's own schema
    assert code == 422 and d["loc"] == loc("0", "options", "marker")
    with Verifier() as v:
        http = {"name": "http", "options": {"url": v.url}}
        code, d = post(ApiPolicy(), http)  # MATHRL_REWARD_HOSTS empty: no host at all
        assert code == 422 and d["loc"] == loc("0", "options", "url")
        assert "MATHRL_REWARD_HOSTS" in d["msg"] and v.posts == 0 and not v.batches
        assert post(allowed, http)[0] == 422  # the host, but not the port, is listed
        allowed = ApiPolicy(reward_hosts=(f"127.0.0.1:{down_port}", urlsplit(v.url).netloc))
        assert post(allowed, http)[0] == 201
        bad = {"name": "http", "options": {"url": "http://127.0.0.1:99999/"}}
        code, d = post(allowed, bad)
        assert code == 422 and d["loc"] == loc("0", "options", "url") and "port" in d["msg"]
        other = {"name": "http", "options": {"url": v.url.replace("127.0.0.1", "localhost")}}
        assert post(allowed, other)[1]["loc"] == loc("0", "options", "url")
    down = {"name": "http", "options": {"url": f"http://127.0.0.1:{down_port}/score"}}
    code, d = post(allowed, down)
    assert code == 422 and d["loc"] == loc("0", "options", "url") and "unreachable" in d["msg"]
    assert post(ApiPolicy(), {"name": "math"}, {"name": "with_parts", "weight": 0.5})[0] == 201
    assert post(ApiPolicy())[0] == 201  # no functions: reward.kind, as before
    store.close()


def test_the_service_reads_its_allowed_hosts_from_the_environment(monkeypatch):
    from orchestrator.service.settings import Settings

    monkeypatch.setenv("MATHRL_REWARD_HOSTS", "127.0.0.1, judge.local:8080,")
    policy = ApiPolicy.from_settings(Settings())
    assert policy.reward_hosts == ("127.0.0.1", "judge.local:8080")
    monkeypatch.delenv("MATHRL_REWARD_HOSTS")
    assert ApiPolicy.from_settings(Settings()).reward_hosts == ()


def test_mathrl_rewards_lists_functions_with_their_options(plugin):
    from orchestrator.cli import app

    out = CliRunner().invoke(app, ["rewards"])
    assert out.exit_code == 0, out.output
    assert "math  (mathrl: services.rewards.builtins:math_reward)" in out.output
    assert 'options.grading: "strict"|"lenient" = "strict"  How the answer is read' in out.output
    assert "options.url: string required" in out.output
    assert "options.marker: string required  A file path" in out.output  # the plugin's
    assert "not_importable" in out.output and "cannot be used" in out.output
    rows = json.loads(CliRunner().invoke(app, ["rewards", "--json"]).output)
    by_name = {r["name"]: r for r in rows}
    assert by_name["http"]["options"]["properties"]["retries"]["default"] == 2
    assert by_name["flaky"]["dist"] == "mathrl-test-rewards"


def test_train_refuses_an_unknown_function_before_anything_starts(tmp_path):
    from orchestrator.cli import app

    config = tmp_path / "run.toml"
    config.write_text('name = "x"\n[[reward.functions]]\nname = "nope"\n')
    out = CliRunner().invoke(app, ["train", str(config)])
    assert out.exit_code == 2 and "reward.functions.0.name: no reward function 'nope'" in \
        out.output
