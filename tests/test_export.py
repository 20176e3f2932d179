"""`GET /runs/{id}/metrics?format=csv` on the real API app over a real run store: steps with
different keys, exact values, and the JSON form unchanged."""

from __future__ import annotations

import csv
import io

from fastapi.testclient import TestClient

from orchestrator.service.api.app import create_app
from orchestrator.service.store import RunStore


def test_csv_has_every_key_and_exact_values(tmp_path):
    store = RunStore(tmp_path / "runs.db")
    run_id = store.create_run("csv-run", {"name": "csv-run"}, 3)
    steps = {1: {"reward/mean": 0.1 + 0.2, "time/step": 1.5},
             2: {"reward/mean": 1 / 3, "time/step": 2.25, "loss/kl": 1e-7},
             3: {"reward/mean": 0.5}}
    for s, m in steps.items():
        store.record_step(run_id, s, m, None, None)
    with TestClient(create_app(store)) as client:
        r = client.get(f"/runs/{run_id}/metrics?format=csv")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        head, *rows = list(csv.reader(io.StringIO(r.text)))
        assert head == ["step", "at", "loss/kl", "reward/mean", "time/step"]
        got = {int(row[0]): {k: float(v) for k, v in zip(head[2:], row[2:], strict=True) if v}
               for row in rows}
        assert got == steps  # exact: no rounding on the way out
        assert client.get(f"/runs/{run_id}/metrics").json()["steps"][2]["metrics"] == steps[3]
        empty = store.create_run("empty", {"name": "empty"}, 1)
        assert client.get(f"/runs/{empty}/metrics?format=csv").text == "step,at\n"
    store.close()
