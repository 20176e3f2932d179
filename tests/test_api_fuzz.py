"""Schemathesis over the API's own OpenAPI schema: generated requests (valid and invalid bodies,
path and query values) against the real app and its real SQLite run store, served on
127.0.0.1 with a token. Whatever a client sends, the server never answers 5xx (except one
that the operation documents as its answer)."""

from __future__ import annotations

import schemathesis
from api_server import served
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from orchestrator.service.api.app import create_app
from orchestrator.service.api.limits import ApiPolicy
from orchestrator.service.store import RunStore

TOKEN = "fuzz-token"
EXAMPLES = {"POST /runs": 200, "GET /runs/{run_id}/events": 400,
            "GET /runs/{run_id}/metrics": 100}
"""Generated requests per operation (default 50): most can go wrong in a run config and in
the query of the stream and the metrics."""


def _seed(store: RunStore, tmp_path) -> tuple[list[str], list[str]]:
    """Runs for the generated requests to hit: (every id, the ids whose event stream ends)."""
    cfg = {"name": "seed"}
    done = store.create_run("done", cfg, 2)
    store.set_run_dir(done, str(tmp_path / "runs" / done))
    for step in (1, 2):
        store.record_step(done, step, {"reward/mean": 0.5, "time/step": 1.0}, None, None)
    store.set_status(done, "completed", "2 steps")
    stopped = store.create_run("stopped", cfg, 5)
    store.set_status(stopped, "cancelled", "cancelled while queued")
    queued = store.create_run("queued", cfg, 5)
    return [done, stopped, queued], [done, stopped]


def _strategy(op, run_ids: list[str]):
    """Valid and invalid requests (an operation with nothing to get wrong has no invalid ones),
    to unknown run ids and to the seeded runs."""
    modes = [GenerationMode.POSITIVE]
    if op.body or any(True for _ in op.iter_parameters()):
        modes.append(GenerationMode.NEGATIVE)
    strategies = [op.as_strategy(mode) for mode in modes]
    if "{run_id}" in op.path:
        strategies += [op.as_strategy(mode, path_parameters={"run_id": rid})
                       for mode in modes for rid in run_ids]
    return st.one_of(strategies)


def _fuzz(op, strategy, headers: dict, examples: int) -> None:
    """Send `examples` generated requests for `op`; fail on a 5xx it does not document (e.g.
    `/health`'s 503 while the generator is down is its answer, not a server error)."""
    documented = {int(c) for c in op.definition.raw.get("responses", {}) if c.isdigit()}

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def check(case):
        try:
            response = case.call(headers=headers, timeout=10)
        except Exception as e:  # e.g. an event stream the server broke off after its 200
            raise AssertionError(f"{case.method} {case.formatted_path} {case.query} "
                                 f"{case.headers}: no complete answer ({e!r})") from e
        assert response.status_code < 500 or response.status_code in documented, (
            case.method, case.formatted_path, case.query, case.headers, case.body,
            response.status_code, response.text[:500])

    check()


# Schemathesis' pytest plugin (`from_fixture`) does not run under pytest 9 yet, so each
# operation gets a plain Hypothesis test here.
def test_no_request_gets_a_server_error(tmp_path):
    store = RunStore(tmp_path / "runs.db")
    every, ending = _seed(store, tmp_path)
    policy = ApiPolicy(token=TOKEN, data_roots=(tmp_path,))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    seen: list[str] = []
    failures: list[str] = []  # every operation is fuzzed, whichever fails first
    with served(create_app(store, policy=policy)) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        for result in schema.get_all_operations():
            op = result.ok()
            seen.append(op.label)
            # A queued run's event stream stays open until the run ends: only ended ones here.
            ids = ending if op.path.endswith("/events") else every
            try:
                _fuzz(op, _strategy(op, ids), headers, EXAMPLES.get(op.label, 50))
            except AssertionError as e:
                failures.append(f"{op.label}: {str(e)[:1500]}")
    store.close()
    assert {"POST /runs", "GET /runs/{run_id}/events", "GET /metrics"} <= set(seen), seen
    assert not failures, "\n\n".join(failures)
