"""Learner step time, tokens/s and memory per learner setting, on SmolLM2-135M-Instruct.

    python benchmarks/learner_speed.py [--steps 3] [--prompts 8] [--group 8] [--max-new 64]

The real `Learner` (LoRA r=16 on all linear layers, fp32 on the CPU) trains on batches shaped
like the vs-TRL task: `--prompts` single-digit-sum prompts rendered with SmolLM2's chat template,
`--group` completions each, completion lengths drawn uniformly from 8..`--max-new` (token ids
taken from real text, so nothing depends on what they say). Each variant runs in a fresh
process (`--variant`), so peak RSS is its own: the first step is a warm-up, the median of the
rest is reported with completion tokens/s and the decoder positions computed. Ratios are
against the first variant (the per-sequence pass with fixed micro-batches, the setting
before the shared-prompt pass and token packing).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {
    "per-seq mb4": {"shared_prompt": False, "micro_batch_size": 4},
    "per-seq mb16": {"shared_prompt": False, "micro_batch_size": 16},
    "per-seq 2048 tok": {"shared_prompt": False, "micro_batch_tokens": 2048},
    "shared mb8": {"shared_prompt": True, "micro_batch_size": 8},
    "shared mb4": {"shared_prompt": True, "micro_batch_size": 4},
    "shared 2048 tok": {"shared_prompt": True, "micro_batch_tokens": 2048},
    "shared 4096 tok": {"shared_prompt": True, "micro_batch_tokens": 4096},
    "shared 1024 tok": {"shared_prompt": True, "micro_batch_tokens": 1024},
    "shared mb8 bf16": {"shared_prompt": True, "micro_batch_size": 8, "dtype": "bfloat16"},
    "shared 4096 gc": {"shared_prompt": True, "micro_batch_tokens": 4096,
                       "gradient_checkpointing": True},
}


def model_dir() -> Path:
    from services.smollm2 import ensure_smollm2

    home = ROOT / ".mathrl"
    return ensure_smollm2(home / "models" / "smollm2-135m-instruct", home / "cache")


def make_batch(tok, prompts: int, group: int, max_new: int, seed: int):
    from services.data import arithmetic_problems, render_prompt
    from services.schemas import TrainBatch, TrainSequence

    rng = random.Random(seed)
    problems = arithmetic_problems(prompts, seed=seed)
    filler = tok("Let me add the two numbers. The answer is 7. " * 40)["input_ids"]
    seqs = []
    for p in problems:
        ids = render_prompt(tok, p.question, instruction="Put your final answer within "
                            "\\boxed{}.", system=None)
        for _ in range(group):
            n = rng.randint(8, max_new)
            start = rng.randint(0, len(filler) - n)
            seqs.append(TrainSequence(prompt_ids=ids, completion_ids=filler[start:start + n],
                                      advantage=rng.uniform(-1.5, 1.5)))
    return TrainBatch(step=0, sequences=seqs)


def run_variant(name: str, args) -> dict:
    import torch
    from transformers import AutoTokenizer

    from services.config import RunConfig
    from services.learner.learner import Learner

    path = model_dir()
    tok = AutoTokenizer.from_pretrained(path)
    variant = dict(VARIANTS[name])
    dtype = variant.pop("dtype", "float32")
    cfg = RunConfig.model_validate({
        "model": {"name_or_path": str(path), "dtype": dtype, "max_model_len": 512},
        "lora": {"rank": 16, "alpha": 32},
        "rollout": {"temperature": 1.0, "max_new_tokens": args.max_new},
        "learner": {"lr": 1e-4, "device": "cpu", **variant},
    })
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        learner = Learner(cfg, model_path=str(path), run_dir=tmp)
        times, tps, metrics = [], [], {}
        for step in range(args.steps):
            batch = make_batch(tok, args.prompts, args.group, args.max_new, seed=step)
            t0 = time.perf_counter()
            metrics = learner.train_step(batch).metrics
            times.append(time.perf_counter() - t0 - metrics["time/save"])
            tps.append(metrics["perf/learner_tokens_per_s"])
    rest = times[1:] or times
    return {"variant": name, "learn_s": statistics.median(rest),
            "tokens_per_s": statistics.median(tps[1:] or tps),
            "positions": metrics["perf/learner_positions"],
            "padding": metrics["perf/padding_share"],
            "tokens": metrics["learner/tokens"],
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-new", type=int, default=64)
    ap.add_argument("--variant", choices=list(VARIANTS), help=argparse.SUPPRESS)
    ap.add_argument("--only", nargs="*", choices=list(VARIANTS), help="variants to run")
    args = ap.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args)))
        return
    model_dir()  # convert once, outside the timed processes
    rows = []
    for name in args.only or VARIANTS:
        out = subprocess.run([sys.executable, __file__, "--variant", name, "--steps",
                              str(args.steps), "--prompts", str(args.prompts), "--group",
                              str(args.group), "--max-new", str(args.max_new)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  done {name}: {rows[-1]['learn_s']:.2f} s", file=sys.stderr)
    base = rows[0]
    print(f"\n{args.prompts} prompts x {args.group} completions of 8..{args.max_new} tokens, "
          f"median of {max(args.steps - 1, 1)} steps after a warm-up\n")
    print(f"{'variant':<18} {'learn s':>8} {'x base':>7} {'tok/s':>7} {'x base':>7} "
          f"{'positions':>9} {'padding':>8} {'peak RSS GB':>11}")
    for r in rows:
        print(f"{r['variant']:<18} {r['learn_s']:8.2f} {r['learn_s'] / base['learn_s']:7.2f} "
              f"{r['tokens_per_s']:7.0f} {r['tokens_per_s'] / base['tokens_per_s']:7.2f} "
              f"{r['positions']:9.0f} {r['padding']:8.1%} {r['peak_rss_gb']:11.2f}")


if __name__ == "__main__":
    main()
