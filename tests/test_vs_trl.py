"""benchmarks/vs_trl.py without running either side: its config reads back from the TOML it
writes, and TRL gets the prompts mathrl's loop would visit, in the same order."""

from __future__ import annotations

import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

from vs_trl import bench_config, step_problems  # noqa: E402
from vs_trl_report import by_name, to_toml  # noqa: E402

from services.config import load_config  # noqa: E402
from services.data import PromptSampler, arithmetic_problems  # noqa: E402


def test_bench_config_round_trips_through_toml(tmp_path):
    cfg = bench_config(tmp_path / "model", 3, tmp_path, 2048)
    assert (cfg.rollout.prompts_per_step, cfg.rollout.group_size, cfg.rollout.max_new_tokens,
            cfg.rollout.temperature) == (8, 8, 64, 1.0)
    assert (cfg.lora.rank, cfg.lora.alpha, cfg.learner.lr, cfg.algorithm.beta) == (16, 32, 1e-4, 0)
    assert not cfg.eval.enabled and cfg.generator.sync_mode == "merged"
    for dump in (cfg.model_dump(mode="json"), cfg.model_dump(mode="json", exclude_defaults=True)):
        path = tmp_path / "c.toml"
        path.write_text(to_toml(dump))
        assert load_config(path) == cfg


def test_trl_gets_the_loops_prompt_order(tmp_path):
    cfg = bench_config(tmp_path / "model", 3, tmp_path, 2048)
    steps = step_problems(cfg)
    problems = arithmetic_problems(cfg.data.arith.n, seed=cfg.schedule.seed)
    sampler = PromptSampler(len(problems), seed=cfg.schedule.seed)
    assert [[p.id for p in s] for s in steps] == [
        [problems[i].id for i in sampler.next_batch(8)] for _ in range(3)]


def test_by_name_groups_processes():
    gib = 2**30
    procs = [{"pid": 1, "name": "driver", "peak_pss": 2 * gib},
             {"pid": 2, "name": "ray::IDLE", "peak_pss": gib // 4},
             {"pid": 3, "name": "ray::IDLE", "peak_pss": gib // 4},
             {"pid": 4, "name": "tiny", "peak_pss": 1}]
    assert by_name(procs) == "driver 2.00, ray::IDLE x2 0.50"
