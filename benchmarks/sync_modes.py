"""Step-time breakdown of the real loop, LoRA sync vs merged-weights sync, on this machine.

    .venv/bin/python benchmarks/sync_modes.py [CONFIG] [--steps N]

Runs the same config twice (generator.sync_mode = lora, then merged; each with its own vLLM
server and learner), skips the first step of each (warm-up), and prints mean seconds per
phase with the merged/lora ratio. Default config: configs/tiny-cpu.toml with a tiny model
built on the fly.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.run.stack import Stack, prepare_run  # noqa: E402
from services.config import RunConfig, load_config  # noqa: E402

PHASES = ("time/generate", "time/reward", "time/learn", "time/sync", "time/step")


def run_mode(cfg: RunConfig, mode: str, steps: int, work: Path) -> dict[str, float]:
    data = cfg.model_dump()
    data["generator"]["sync_mode"] = mode
    data["schedule"]["steps"] = steps + 1
    data["name"] = f"bench-{mode}"
    cfg = RunConfig.model_validate(data)
    rows: list[dict[str, float]] = []
    with Stack(cfg, work / mode) as stack:
        handle = prepare_run(stack, cfg, work / mode / "run", sinks=[lambda s, m: rows.append(m)])
        try:
            handle.loop.run()
        finally:
            handle.close()
    rows = rows[1:]  # first step pays one-off costs (compilation, caches)
    out = {k: statistics.fmean(r[k] for r in rows) for k in PHASES}
    out["perf/rollout_tokens_per_s"] = statistics.fmean(r["perf/rollout_tokens_per_s"]
                                                        for r in rows)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config", nargs="?", default=str(ROOT / "configs" / "tiny-cpu.toml"))
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mathrl-bench-"))
    cfg = load_config(args.config)
    if not Path(cfg.model.name_or_path).exists() and "tiny" in Path(args.config).name:
        from services.tinymodel import build_tiny_model

        data = cfg.model_dump()
        data["model"]["name_or_path"] = str(build_tiny_model(work / "tiny-model"))
        cfg = RunConfig.model_validate(data)
    results = {mode: run_mode(cfg, mode, args.steps, work) for mode in ("lora", "merged")}
    print(f"\n{args.config}: mean over {args.steps} steps after one warm-up step (seconds)")
    print(f"{'phase':<28}{'lora':>10}{'merged':>10}{'merged/lora':>14}")
    for key in (*PHASES, "perf/rollout_tokens_per_s"):
        a, b = results["lora"][key], results["merged"][key]
        print(f"{key:<28}{a:>10.3f}{b:>10.3f}{b / a if a else float('nan'):>14.2f}")


if __name__ == "__main__":
    main()
