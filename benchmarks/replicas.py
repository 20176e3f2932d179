"""Per-step generation and sync time with 1 and 2 generator replicas, on this machine.

    .venv/bin/python benchmarks/replicas.py [CONFIG] [--steps N] [--max-new-tokens T]
        [--model PATH]

Runs the same config three times, each with its own vLLM server(s), Ray and learner:
one server launched directly (the one-machine default), two Ray-placed replicas loading the
learner's folder (`adapter_transport = "path"`), and two replicas receiving each adapter over
Ray (`"ray"`, no shared disk). Skips the first step of each (warm-up) and prints mean seconds
per phase, the sync time of each replica, and the ratio to one server. On a machine with
fewer cores than replicas x the cores one server uses, the two replicas share the cores and
are not expected to be faster: the figure that carries over to one GPU per replica is the
sync time per replica. Default config: configs/tiny-cpu.toml with a tiny model built on the
fly.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.run.stack import Stack, prepare_run  # noqa: E402
from services.config import RunConfig, load_config  # noqa: E402

MODES = {"1 server": (1, "path"), "2 replicas, path": (2, "path"),
         "2 replicas, ray": (2, "ray")}
KEYS = ("time/generate", "time/sync", "time/sync_replica0", "time/sync_replica1",
        "time/step", "completion/mean_tokens", "perf/rollout_tokens_per_s")


def run_mode(cfg: RunConfig, label: str, steps: int, work: Path) -> dict[str, float]:
    replicas, transport = MODES[label]
    data = cfg.model_dump()
    # LoRA sync in every mode (a pool serves adapters only), so the three compare like for like.
    data["generator"].update(replicas=replicas, adapter_transport=transport, sync_mode="lora",
                             node_dir=str(work / "node"))
    data["eval"]["enabled"] = False
    data["schedule"]["steps"] = steps + 1
    data["name"] = "bench"
    cfg = RunConfig.model_validate(data)
    rows: list[dict[str, float]] = []
    sub = work / label.replace(" ", "").replace(",", "-")
    with Stack(cfg, sub) as stack:
        handle = prepare_run(stack, cfg, sub / "run", sinks=[lambda s, m: rows.append(m)])
        try:
            handle.loop.run()
        finally:
            handle.close()
    rows = rows[1:]  # the first step pays one-off costs (compilation, caches)
    return {k: statistics.fmean(r[k] for r in rows) if k in rows[0] else float("nan")
            for k in KEYS}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config", nargs="?", default=str(ROOT / "configs" / "tiny-cpu.toml"))
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--model", default=None, help="overrides model.name_or_path")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mathrl-bench-"))
    cfg = load_config(args.config)
    data = cfg.model_dump()
    if not Path(cfg.model.name_or_path).exists() and "tiny" in Path(args.config).name:
        from services.tinymodel import build_tiny_model

        data["model"]["name_or_path"] = str(build_tiny_model(work / "tiny-model"))
    if args.model:
        data["model"]["name_or_path"] = args.model
    if args.max_new_tokens:
        data["rollout"]["max_new_tokens"] = args.max_new_tokens
    cfg = RunConfig.model_validate(data)
    results = {label: run_mode(cfg, label, args.steps, work) for label in MODES}
    base = results["1 server"]
    print(f"\n{args.config}: {cfg.rollout.prompts_per_step} prompts x {cfg.rollout.group_size}, "
          f"{cfg.rollout.max_new_tokens} new tokens; mean over {args.steps} steps after one "
          f"warm-up step (seconds); {os.cpu_count()} cores")
    print(f"{'':<28}" + "".join(f"{label:>20}" for label in MODES) + f"{'2 ray / 1':>12}")
    for key in KEYS:
        vals = [results[label][key] for label in MODES]
        ratio = vals[2] / base[key] if base[key] == base[key] and base[key] else float("nan")
        print(f"{key:<28}" + "".join(f"{v:>20.3f}" for v in vals) + f"{ratio:>12.2f}")


if __name__ == "__main__":
    main()
