"""Evaluation side of benchmarks/learn_vs_trl.py: every saved adapter of both sides through one
vLLM server and one grader, after all training is over (never inside a timed budget).

The server serves a writable copy of the base model (`sync_mode = "merged"`, as the CPU demo
trains): each adapter is merged into it on this side (`services.learner.export.write_merged`)
and vLLM re-reads the weights, about a second, where serving a LoRA adapter on vLLM-CPU would
make every evaluation ~4x slower. The held-out problems, prompts, decoding and grader are the
same for every adapter (`services.evals.run_benchmark`: greedy and k samples, strict and
lenient). Also the table and the PNG of accuracy against wall-clock time.
"""

from __future__ import annotations

import statistics
from pathlib import Path

SIDES = ("mathrl", "TRL")
COLUMNS = (("greedy", "greedy"), ("mean@{k}", "mean@{k}"))
GRADINGS = (("_lenient", "lenient"), ("", "strict"))


class AdapterEvaluator:
    """`evaluate(adapter_dir | None)` -> the benchmark summary of the base model plus that
    adapter (None: the base model). Use as a context manager: it starts and stops the server."""

    def __init__(self, cfg, problems, work: Path, *, samples: int, temperature: float,
                 max_tokens: int, concurrency: int = 64):
        self.cfg, self.problems, self.work = cfg, problems, work
        self.samples, self.temperature, self.max_tokens = samples, temperature, max_tokens
        self.concurrency = concurrency
        self.cache: dict[str, dict] = {}

    def __enter__(self) -> AdapterEvaluator:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from services.evals import BenchmarkTask
        from services.evals.protocols import get_protocol
        from services.generator.client import GeneratorClient
        from services.generator.launcher import detect_device, launch
        from services.learner.export import prepare_served_model
        from services.rewards import GraderPool

        cfg = self.cfg
        dtype = getattr(torch, cfg.model.dtype)
        self.served = prepare_served_model(cfg.model.name_or_path, self.work / "served", dtype)
        self.base = AutoModelForCausalLM.from_pretrained(cfg.model.name_or_path, dtype=dtype)
        tok = AutoTokenizer.from_pretrained(cfg.model.name_or_path)
        proto = get_protocol("mathrl")
        prompts = [proto.render(tok, p.question, instruction=cfg.data.instruction,
                                system=cfg.data.system_prompt) for p in self.problems]
        self.task = BenchmarkTask(name="held-out", problems=self.problems, prompts=prompts,
                                  samples=self.samples, temperature=self.temperature,
                                  max_tokens=self.max_tokens, protocol=proto)
        self.server = launch(cfg, model_path=str(self.served), device=detect_device(),
                             log_path=self.work / "eval-generator.log")
        self.client = GeneratorClient(self.server.url, max_parallel=self.concurrency)
        self.pool = GraderPool(n_workers=cfg.reward.num_workers)
        self.dirty = False  # the served weights are not the base model's
        return self

    def __exit__(self, *exc) -> None:
        self.pool.close()
        self.client.close()
        self.server.stop()

    def evaluate(self, adapter: Path | None) -> dict:
        key = str(adapter) if adapter else "base"
        if key in self.cache:
            return self.cache[key]
        from peft import PeftModel

        from services.evals import run_benchmark
        from services.learner.export import write_merged

        if adapter is not None:
            peft = PeftModel.from_pretrained(self.base, str(adapter))
            write_merged(peft, self.served)
            self.base = peft.unload()  # the base model again, without the LoRA layers
            self.client.reload_weights()
            self.dirty = True
        elif self.dirty:
            raise RuntimeError("evaluate the base model first: its weights are overwritten")
        result = run_benchmark(self.client, self.pool, self.cfg.generator.alias, self.task,
                               keep_items=False)
        self.cache[key] = result["summary"]
        return result["summary"]


def mean_se(values: list[float]) -> tuple[float, float | None]:
    """Mean over seeds and its standard error (None for one seed)."""
    if len(values) < 2:
        return values[0], None
    return statistics.fmean(values), statistics.stdev(values) / len(values) ** 0.5


def curve(runs: list[dict], metric: str) -> list[tuple[float, float, float | None]]:
    """(minutes, mean over seeds, se) at each wall-clock point of one side's runs."""
    out = []
    for i, t in enumerate(runs[0]["points_s"]):
        vals = [r["evals"][i][metric] for r in runs]
        out.append((t / 60, *mean_se(vals)))
    return out


def reach_time(runs: list[dict], metric: str, target: float) -> float | None:
    """First wall-clock point (s) where the seed-mean of `metric` reaches `target`."""
    for minutes, value, _ in curve(runs, metric):
        if value >= target - 1e-12:
            return minutes * 60
    return None


def table(result: dict) -> str:
    """Accuracy at each wall-clock point, both sides, greedy and mean@k under both gradings
    (mean over seeds ± standard error over seeds when there are two or more)."""
    k = result["samples"]
    metrics = [(f"{name.format(k=k)}{suffix}", f"{label.format(k=k)} {g}")
               for name, label in COLUMNS if k or name == "greedy" for suffix, g in GRADINGS]
    head = ["min", *(f"{side} {lab}" for side in SIDES for _, lab in metrics)]
    rows = [head]
    sides = {s: result["runs"].get(s, []) for s in SIDES}
    points = next(iter(r for r in sides.values() if r))[0]["points_s"]
    for i, t in enumerate(points):
        row = [f"{t / 60:.1f}"]
        for side in SIDES:
            for m, _ in metrics:
                if not sides[side]:
                    row.append("-")
                    continue
                mean, se = mean_se([r["evals"][i][m] for r in sides[side]])
                row.append(f"{mean:.1%}" + (f" ± {se * 100:.1f}" if se is not None else ""))
        rows.append(row)
    widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def plot(result: dict, path: Path) -> Path:
    """Held-out accuracy against wall-clock minutes: one panel per metric (greedy, mean@k), a
    line per side and grading (mean over seeds; each seed faint)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = result["samples"]
    panels = [name.format(k=k) for name, _ in COLUMNS if k or name == "greedy"]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    colors = {"mathrl": "#2563eb", "TRL": "#dc2626"}
    for ax, metric in zip(axes[0], panels, strict=True):
        for side in SIDES:
            runs = result["runs"].get(side) or []
            for suffix, grading in GRADINGS:
                if not runs:
                    continue
                style = "-" if grading == "lenient" else "--"
                pts = curve(runs, metric + suffix)
                ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], style, marker="o",
                        color=colors[side], label=f"{side}, {grading}")
                for r in runs if len(runs) > 1 else []:
                    ax.plot([t / 60 for t in r["points_s"]],
                            [100 * e[metric + suffix] for e in r["evals"]], style,
                            color=colors[side], alpha=0.25, linewidth=0.8)
        ax.set_xlabel("wall-clock minutes of training (start-up included)")
        ax.set_ylabel(f"held-out {metric} (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    seeds = {s: len(result["runs"].get(s) or []) for s in SIDES}
    fig.suptitle(f"{result['task']}: {result['eval_n']} held-out problems; seeds per side "
                 f"{seeds}; lr mathrl {result['lr']['mathrl']}, TRL {result['lr']['TRL']}",
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
