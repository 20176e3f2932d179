"""TRL's side of benchmarks/learn_vs_trl.py: `GRPOTrainer` on the benchmark's task for a
wall-clock budget, every optimizer step's adapter saved outside the timed budget.

Run by the driver in its own process (`learn_vs_trl.py --side trl ...`). The clock starts at the
driver's `t0` (just before this process was launched, so start-up counts as it does for
mathrl); the time spent saving adapters is taken off it. The reward is mathrl's own `Scorer`
on the run config's `[reward]`, so both sides are paid the same for the same completion.
"""

from __future__ import annotations

import json
import time
from pathlib import Path


def run_trl(cfg, rows: list[dict], out: Path, *, t0: float, budget_s: float,
            micro_batch: int = 8) -> None:
    """Train on `rows` (`{"prompt": chat messages, "answer"}` in step order) until `budget_s`
    seconds after `t0` (epoch); writes `out/steps.json` and `out/adapters/step-N`."""
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOTrainer
    from vs_trl import trl_args, trl_model  # benchmarks/ is the script folder on sys.path

    from orchestrator.run.rollout import Scorer
    from services.schemas import Completion

    ro, path = cfg.rollout, cfg.model.name_or_path
    per_step = ro.prompts_per_step * ro.group_size
    if per_step % micro_batch:
        raise SystemExit(f"micro batch {micro_batch} must divide {per_step}")
    tok = AutoTokenizer.from_pretrained(path)
    scorer = Scorer(cfg.reward, tok)
    rewards_seen: list[dict] = []

    def reward(completions, answer, completion_ids, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        groups = [[Completion(token_ids=list(ids), logprobs=[0.0] * len(ids), text=t)]
                  for t, ids in zip(texts, completion_ids, strict=True)]
        scored = scorer.score(groups, list(answer))
        flat = [g[0] for g in scored.rewards]
        rewards_seen.append({"reward/mean": sum(flat) / len(flat),
                             "reward/accuracy": sum(g[0] for g in scored.correct) / len(flat),
                             "completion/mean_tokens": sum(map(len, completion_ids)) / len(flat)})
        return flat

    steps: list[dict] = []
    adapters = out / "adapters"

    class Budget(TrainerCallback):
        """Saves each step's adapter with the clock stopped; stops training at the budget."""

        paused = 0.0

        def on_step_end(self, args, state, control, model=None, **kw):
            now = time.time()
            elapsed = now - t0 - self.paused
            model.save_pretrained(adapters / f"step-{state.global_step}",
                                  safe_serialization=True)
            steps.append({"step": state.global_step, "elapsed_s": elapsed,
                          **(rewards_seen[-1] if rewards_seen else {})})
            self.paused += time.time() - now
            if elapsed >= budget_s:
                control.should_training_stop = True

    args = trl_args(cfg, out / "trl-out", micro_batch,
                    max_steps=len(rows) // ro.prompts_per_step)
    model, lora = trl_model(cfg)
    budget = Budget()
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args,
                          train_dataset=Dataset.from_list(rows), processing_class=tok,
                          peft_config=lora, callbacks=[budget])
    started = time.time() - t0
    try:
        trainer.train()
    finally:
        scorer.close()
    (out / "steps.json").write_text(json.dumps({
        "steps": steps, "startup_s": started, "paused_s": budget.paused,
        "settings": {k: str(getattr(args, k)) for k in (
            "gradient_checkpointing", "bf16", "per_device_train_batch_size",
            "gradient_accumulation_steps", "num_generations", "max_completion_length",
            "loss_type", "scale_rewards", "epsilon", "beta", "learning_rate", "temperature")},
        "versions": {"trl": trl.__version__, "torch": torch.__version__},
    }, indent=1))
