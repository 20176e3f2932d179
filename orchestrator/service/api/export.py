"""Step metrics as CSV: one row per step, `step` and `at` (Unix time) first, then every metric
key any step has, sorted; a step without a key leaves its cell empty."""

from __future__ import annotations

import csv
import io

from orchestrator.service.api.schemas import StepMetrics


def metrics_csv(steps: list[StepMetrics], evals: list[dict] = ()) -> str:
    """`evals`: the run's evaluations; their numeric `eval/...` scores join the row of the step
    they measured (a step evaluated but not trained, such as 0, gets a row of its own, its
    time the evaluation's); a later evaluation of the same key and step wins."""
    rows: dict[int, tuple[float | None, dict]] = {s.step: (s.at, dict(s.metrics)) for s in steps}
    for e in evals:
        step = e.get("step")
        if not isinstance(step, int):
            continue
        at, metrics = rows.setdefault(step, (None, {}))
        metrics.update({k: v for k, v in e.items() if k.startswith("eval/")
                        and isinstance(v, int | float) and not isinstance(v, bool)})
    keys = sorted({k for _, m in rows.values() for k in m})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["step", "at", *keys])
    for step in sorted(rows):
        at, m = rows[step]
        # repr(float) round-trips exactly, so the file holds the store's values, not roundings.
        w.writerow([step, "" if at is None else repr(at),
                    *(repr(m[k]) if k in m else "" for k in keys)])
    return buf.getvalue()
