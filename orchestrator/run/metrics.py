"""Step metrics sinks: a line-buffered JSONL file and a one-line console summary."""

from __future__ import annotations

import json
import logging
from pathlib import Path

run_log = logging.getLogger("mathrl.run")
SPLIT = (("time/generate", "gen"), ("time/reward", "reward"), ("time/learn", "learn"),
         ("time/sync", "sync"))


def format_step(step: int, total: int, m: dict[str, float]) -> str:
    """One console line: `step 3/20  reward 0.412  acc 25.0%  ...  4.12s (gen 2.01 ...)`."""
    parts = [f"step {step}/{total}"]
    for key, label, spec in (("reward/mean", "reward", ".3f"), ("reward/accuracy", "acc", ".1%"),
                             ("reward/format", "boxed", ".0%"),
                             ("completion/mean_tokens", "tokens", ".1f"),
                             ("loss/kl", "kl", ".3g")):
        if key in m and (m[key] or key != "loss/kl"):  # KL is 0 whenever beta is
            parts.append(f"{label} {m[key]:{spec}}")
    # Completions that scored 0 because a reward function failed on them: shown only then.
    failed = [f"{int(m[k])} {label}" for k, label in (("reward/timeouts", "timed out"),
                                                      ("reward/errors", "failed"))
              if m.get(k)]
    if failed:
        parts.append("reward calls " + ", ".join(failed))
    if "time/step" in m:
        split = " ".join(f"{label} {m[k]:.2f}" for k, label in SPLIT if k in m)
        parts.append(f"{m['time/step']:.2f}s" + (f" ({split})" if split else ""))
    return "  ".join(parts)


def _pct(m: dict[str, float], k: str) -> str:
    """`40.0% ± 9.1%`: score `k` of `m` with its standard error, where there is one."""
    return f"{m[k]:.1%}" + (f" ± {m[k + '_se']:.1%}" if k + "_se" in m else "")


def format_eval(step: int, result: dict) -> str:
    """`eval at step 6: arith greedy 40.0% ± 9.1% (lenient 60.0% ± 9.1%) boxed 80.0% ± 7.4%
    (n=30) | ...` (each score with its standard error, strict then lenient); a result without
    benchmark keys: its accuracy and boxed rate."""
    benches: dict[str, dict[str, float]] = {}
    for k, v in result.items():
        if k.startswith("eval/") and k.count("/") == 2:
            _, name, metric = k.split("/")
            benches.setdefault(name, {})[metric] = v
    if not benches:
        n = result.get("n")
        return (f"eval at step {step}: accuracy {result.get('accuracy', float('nan')):.1%}  "
                f"boxed {result.get('format', float('nan')):.1%}"
                + (f"  (n={int(n)})" if n is not None else ""))

    parts = []
    for name, m in benches.items():
        # `pass@1` is the stored alias of `greedy`; `<k>_se` is the standard error of `k`,
        # `<k>_lenient` its lenient twin, shown beside it rather than as a score of its own.
        shown = [f"{k} {_pct(m, k)}" + (f" (lenient {_pct(m, k + '_lenient')})"
                                       if k + "_lenient" in m else "")
                 for k in m
                 if (k in ("greedy", "boxed") or k.startswith(("pass@", "mean@", "maj@")))
                 and not k.endswith(("_se", "_lenient"))
                 and not (k == "pass@1" and "greedy" in m)]
        parts.append(f"{name} " + " ".join(shown)
                     + (f" (n={int(m['n'])})" if "n" in m else ""))
    return f"eval at step {step}: " + " | ".join(parts)


class JsonlSink:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", buffering=1)  # noqa: SIM115 - closed in close()

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        self._f.write(json.dumps({"step": step, **metrics}) + "\n")

    def close(self) -> None:
        self._f.close()


class ConsoleSink:
    """One `mathrl.run` log line per step (the console handler of `orchestrator.run.logs`)."""

    def __init__(self, total_steps: int, prefix: str = ""):
        self.total = total_steps
        self.prefix = prefix

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        run_log.info("%s%s", self.prefix, format_step(step, self.total, metrics))


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
