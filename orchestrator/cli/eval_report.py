"""`mathrl eval`'s pieces that need no server: which datasets a `--dataset` list names, the
JSON report, and the table printed from it."""

from __future__ import annotations

import re
from pathlib import Path

from orchestrator.cli.eval_format import LENIENT, metric_key, score, shown
from services.data import SKILLS, Problem, load_problems
from services.evals import BENCHMARKS, load_benchmark

GRADING_COLUMNS = ("strict", "lenient")


def parse_datasets(spec: str) -> list[tuple[str, str | None]]:
    """`gsm8k,math500=FILE,./x.jsonl,arith,org/name` -> `[(name, path_or_hf_name)]`.

    A benchmark name alone is its Hugging Face set; `name=PATH` a local file of it; an
    existing path a file named after its stem; `arith` the synthetic sums, a skill's name
    (`sum2`, ...) its generated problems; anything else with
    a `/` a Hugging Face dataset name (`repo[:config]`)."""
    out: list[tuple[str, str | None]] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if "=" in part:
            name, _, path = part.partition("=")
            out.append((name.strip(), path.strip()))
        elif part in BENCHMARKS or part == "arith" or part in SKILLS:
            out.append((part, None))
        elif Path(part).exists():
            out.append((re.sub(r"[^A-Za-z0-9_.-]", "_", Path(part).stem), part))
        elif "/" in part:
            out.append((part.rsplit("/", 1)[1].split(":")[0], "hf:" + part))
        else:
            names = ", ".join([*sorted(BENCHMARKS), "arith", *sorted(SKILLS)])
            raise ValueError(f"unknown dataset {part!r}: a benchmark name ({names}), "
                             "NAME=FILE, a file, or a Hugging Face dataset name")
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


def _cell(metric: str, summary: dict) -> str:
    v = summary.get(metric)
    if v is None:
        return "-"
    if metric == "mean_tokens":
        return f"{v:.1f}"
    return score(v, summary.get(f"{metric}_se"))


def table(report: dict) -> str:
    """Benchmark x metric rows; for each evaluated model (base, adapter) a strict and a lenient
    column side by side; every score with its standard error, every benchmark with its n."""
    labels = [m["label"] for m in report["models"]]
    rows = [["benchmark", "metric", *(f"{lb} {g}" for lb in labels for g in GRADING_COLUMNS)]]
    for bench in report["config"]["datasets"]:
        per = {m["label"]: next(b["summary"] for b in m["benchmarks"] if b["name"] == bench)
               for m in report["models"]}
        metrics = sorted({k for s in per.values() for k in s if shown(k, s)}, key=metric_key)
        n = int(next(iter(per.values()))["n"])
        for i, metric in enumerate(metrics):
            cells = [c for label in labels for c in (_cell(metric, per[label]),
                                                      _cell(metric + LENIENT, per[label]))]
            rows.append([f"{bench} (n={n})" if i == 0 else "", metric, *cells])
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) if c < 2 else cell.rjust(w)
                               for c, (cell, w) in enumerate(zip(r, widths, strict=True)))
                     for r in rows)
