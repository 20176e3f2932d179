"""Step metrics as CSV: one row per step, `step` and `at` (Unix time) first, then every metric
key any step has, sorted; a step without a key leaves its cell empty."""

from __future__ import annotations

import csv
import io

from orchestrator.service.api.schemas import StepMetrics


def metrics_csv(steps: list[StepMetrics]) -> str:
    keys = sorted({k for s in steps for k in s.metrics})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["step", "at", *keys])
    for s in steps:
        # repr(float) round-trips exactly, so the file holds the store's values, not roundings.
        w.writerow([s.step, repr(s.at), *(repr(s.metrics[k]) if k in s.metrics else ""
                                         for k in keys)])
    return buf.getvalue()
