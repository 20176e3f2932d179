"""`mathrl eval`'s pieces that need no server: which datasets a `--dataset` list names, the
JSON report, and the table printed from it."""

from __future__ import annotations

import re
from pathlib import Path

from services.data import Problem, load_problems
from services.evals import BENCHMARKS, load_benchmark

METRIC_ORDER = ("greedy", "pass@1", "boxed", "mean@", "maj@", "pass@", "mean_tokens")


def parse_datasets(spec: str) -> list[tuple[str, str | None]]:
    """`gsm8k,math500=FILE,./x.jsonl,arith,org/name` -> `[(name, path_or_hf_name)]`.

    A benchmark name alone is its Hugging Face set; `name=PATH` a local file of it; an
    existing path a file named after its stem; `arith` the synthetic sums; anything else with
    a `/` a Hugging Face dataset name (`repo[:config]`)."""
    out: list[tuple[str, str | None]] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if "=" in part:
            name, _, path = part.partition("=")
            out.append((name.strip(), path.strip()))
        elif part in BENCHMARKS or part == "arith":
            out.append((part, None))
        elif Path(part).exists():
            out.append((re.sub(r"[^A-Za-z0-9_.-]", "_", Path(part).stem), part))
        elif "/" in part:
            out.append((part.rsplit("/", 1)[1].split(":")[0], "hf:" + part))
        else:
            raise ValueError(f"unknown dataset {part!r}: a benchmark name "
                             f"({', '.join(sorted(BENCHMARKS))}, arith), NAME=FILE, a file, "
                             "or a Hugging Face dataset name")
    names = [n for n, _ in out]
    if not out or len(set(names)) != len(names):
        raise ValueError(f"--dataset needs distinct names, got {names}")
    return out


def load_dataset(name: str, path: str | None, *, limit: int | None, split: str,
                 question_field: str | None = None, answer_field: str | None = None
                 ) -> list[Problem]:
    if path is not None and path.startswith("hf:"):
        return load_problems("hf", path=path[3:], split=split, limit=limit,
                             question_field=question_field or "question",
                             answer_field=answer_field or "answer")
    return load_benchmark(name, path, limit=limit, question_field=question_field,
                          answer_field=answer_field, seed=1)


def _metric_key(m: str) -> tuple[int, int, str]:
    for i, prefix in enumerate(METRIC_ORDER):
        if m == prefix or (prefix.endswith("@") and m.startswith(prefix)):
            k = m.split("@")[1] if "@" in m else "0"
            return (i, int(k) if k.isdigit() else 0, m)
    return (len(METRIC_ORDER), 0, m)


def _shown(metric: str, summary: dict) -> bool:
    """Scores get a row; their `_se` goes in the same cell, and `pass@1` (the stored alias of
    `greedy`) is not repeated."""
    return metric not in ("n", "seconds") and not metric.endswith("_se") and not (
        metric == "pass@1" and "greedy" in summary)


def _cell(metric: str, summary: dict) -> str:
    v = summary.get(metric)
    if v is None:
        return "-"
    if metric == "mean_tokens":
        return f"{v:.1f}"
    se = summary.get(f"{metric}_se")
    return f"{v:.1%}" + (f" ± {se:.1%}" if se is not None else "")


def table(report: dict) -> str:
    """Benchmark x metric rows, one column per evaluated model (base, adapter); every score
    with its standard error, every benchmark with its n."""
    labels = [m["label"] for m in report["models"]]
    rows = [["benchmark", "metric", *labels]]
    for bench in report["config"]["datasets"]:
        per = {m["label"]: next(b["summary"] for b in m["benchmarks"] if b["name"] == bench)
               for m in report["models"]}
        metrics = sorted({k for s in per.values() for k in s if _shown(k, s)}, key=_metric_key)
        n = int(next(iter(per.values()))["n"])
        for i, metric in enumerate(metrics):
            cells = [_cell(metric, per[label]) for label in labels]
            rows.append([f"{bench} (n={n})" if i == 0 else "", metric, *cells])
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) if c < 2 else cell.rjust(w)
                               for c, (cell, w) in enumerate(zip(r, widths, strict=True)))
                     for r in rows)
