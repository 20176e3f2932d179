"""How evaluation scores are written: `83.3% ± 6.8` (a share, its standard error beside it in
points), strict and lenient side by side. No service imports: `mathrl eval --run` prints with
this from a client-only install."""

from __future__ import annotations

LENIENT = "_lenient"
"""Suffix of a score under lenient grading (`services.evals.metrics.LENIENT`, not imported
here: the client install has none of the service's packages)."""
METRIC_ORDER = ("greedy", "pass@1", "boxed", "mean@", "maj@", "pass@", "mean_tokens")


def metric_key(m: str) -> tuple[int, int, str]:
    for i, prefix in enumerate(METRIC_ORDER):
        if m == prefix or (prefix.endswith("@") and m.startswith(prefix)):
            k = m.split("@")[1] if "@" in m else "0"
            return (i, int(k) if k.isdigit() else 0, m)
    return (len(METRIC_ORDER), 0, m)


def shown(metric: str, summary: dict) -> bool:
    """Scores get a row; their `_se` goes in the same cell, their `_lenient` twin in the cell
    beside it, and `pass@1` (the stored alias of `greedy`) is not repeated."""
    return metric not in ("n", "seconds") and not metric.endswith(("_se", LENIENT)) and not (
        metric == "pass@1" and "greedy" in summary)


def score(value: float | None, se: float | None = None) -> str:
    """`83.3% ± 6.8`: a share and its standard error beside it, in points."""
    if value is None:
        return "-"
    return f"{value:.1%}" + (f" ± {se * 100:.1f}" if se is not None else "")


def format_result(step: int | None, result: dict) -> str:
    """One line per benchmark of a stored evaluation (`eval/<benchmark>/<metric>` keys): each
    score strict, then lenient, with its standard error; `boxed` once."""
    benches: dict[str, dict[str, float]] = {}
    for k, v in result.items():
        if k.startswith("eval/") and k.count("/") == 2:
            _, name, metric = k.split("/")
            benches.setdefault(name, {})[metric] = v
    lines = [f"evaluation of step {step}:" if step is not None else "evaluation:"]
    for name, m in benches.items():
        parts = []
        for metric in sorted((k for k in m if shown(k, m) and k != "mean_tokens"),
                             key=metric_key):
            if metric == "boxed":
                parts.append(f"boxed {score(m[metric], m.get('boxed_se'))}")
                continue
            cell = f"{metric} strict {score(m[metric], m.get(metric + '_se'))}"
            if metric + LENIENT in m:
                cell += f", lenient {score(m[metric + LENIENT], m.get(metric + LENIENT + '_se'))}"
            parts.append(cell)
        n = f" (n={int(m['n'])})" if "n" in m else ""
        lines.append(f"  {name}{n}: " + "; ".join(parts))
    return "\n".join(lines)
