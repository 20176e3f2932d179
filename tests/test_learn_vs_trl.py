"""benchmarks/learn_vs_trl.py end to end on the tiny model: both sides train a few steps of the
skill (mathrl through `mathrl train`, TRL's GRPOTrainer), the adapters saved at the wall-clock
points are evaluated afterwards through one vLLM server under both gradings, and the table,
JSON and PNG come out. Also its pure pieces: which adapter stands at which point, and the
held-out questions kept out of the file both sides train on."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

from learn_eval import curve, reach_time  # noqa: E402
from learn_vs_trl import at_points, held_out, task_config, training_file, trl_rows  # noqa: E402

TINY_SKILL = """
name = "tiny-skill"
[model]
name_or_path = "{model}"
dtype = "float32"
max_model_len = 256
[lora]
rank = 8
alpha = 16
[data]
source = "skill"
instruction = ""
[data.skill]
task = "sum2"
n = 256
[rollout]
prompts_per_step = 2
group_size = 4
max_new_tokens = 8
temperature = 1.0
[reward]
kind = "math"
num_workers = 1
[learner]
lr = 1e-2
micro_batch_size = 8
[generator]
sync_mode = "merged"
max_lora_rank = 8
cpu_kvcache_space_gib = 1
enforce_eager = true      # vLLM starts in half the time (no compile); tiny model, test only
[eval]
enabled = true
max_new_tokens = 8
[[eval.benchmarks]]
name = "sum2"
limit = 6
samples = 2
"""


def test_adapter_at_each_wall_clock_point():
    run = {"steps": [{"step": 1, "elapsed_s": 40.0, "adapter": "a1"},
                     {"step": 3, "elapsed_s": 70.0, "adapter": "a3"},
                     {"step": 2, "elapsed_s": 55.0, "adapter": "a2"}]}
    assert at_points(run, [30.0, 40.0, 60.0, 90.0]) == [None, "a1", "a2", "a3"]
    runs = [{"points_s": [0, 60, 120], "evals": [{"g": 0.1}, {"g": 0.3}, {"g": 0.5}]},
            {"points_s": [0, 60, 120], "evals": [{"g": 0.1}, {"g": 0.5}, {"g": 0.7}]}]
    assert [round(v, 6) for _, v, _ in curve(runs, "g")] == [0.1, 0.4, 0.6]
    assert reach_time(runs, "g", 0.4) == 60 and reach_time(runs, "g", 0.9) is None


def test_both_sides_train_on_the_same_problems_without_the_held_out_ones(tmp_path):
    config = ROOT / "configs" / "smollm2-skill-cpu.toml"
    cfg = task_config(config, str(tmp_path / "m"), lr=1e-4, seed=1, work=tmp_path)
    evals = held_out(cfg, 200)
    assert len({p.question for p in evals}) == 200
    trained, problems = training_file(cfg, evals, tmp_path / "train.jsonl")
    assert trained.data.source == "math" and not trained.eval.enabled
    assert not {p.question for p in evals} & {p.question for p in problems}
    assert len(problems) > 3000
    rows = trl_rows(trained.model_copy(update={"schedule": trained.schedule.model_copy(
        update={"steps": 3})}), problems)
    assert len(rows) == 3 * cfg.rollout.prompts_per_step
    assert all(r["prompt"][-1]["content"].endswith(cfg.data.instruction) for r in rows)
    # Another seed: another training draw, the same held-out set.
    other = task_config(config, str(tmp_path / "m"), lr=1e-4, seed=2, work=tmp_path)
    assert [p.question for p in held_out(other, 200)] == [p.question for p in evals]


@pytest.mark.slow
def test_benchmark_end_to_end_on_the_tiny_model(tiny_model_dir, tmp_path):
    config = tmp_path / "tiny-skill.toml"
    config.write_text(TINY_SKILL.format(model=tiny_model_dir))
    png, out = tmp_path / "docs" / "curve.png", tmp_path / "results"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "learn_vs_trl.py"), "--config", str(config),
           "--model", str(tiny_model_dir), "--minutes", "10", "--points", "2", "--max-steps", "2",
           "--seeds", "0", "--lr-mathrl", "1e-2", "--lr-trl", "1e-2", "--eval-limit", "6",
           "--samples", "2", "--work", str(tmp_path / "work"), "--out", str(out),
           "--png", str(png)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    result = json.loads(next(out.glob("learn_vs_trl-*.json")).read_text())
    assert result["lr"] == {"mathrl": 0.01, "TRL": 0.01} and result["eval_n"] == 6
    for side in ("mathrl", "TRL"):
        (run,) = result["runs"][side]
        assert [s["step"] for s in run["steps"]] == [1, 2]  # --max-steps 2, well inside 10 min
        assert run["points_s"] == [0.0, 300.0, 600.0] and len(run["evals"]) == 3
        for e in run["evals"]:
            assert {"greedy", "greedy_lenient", "mean@2", "mean@2_lenient", "n"} <= set(e)
            assert e["greedy_lenient"] >= e["greedy"] and e["n"] == 6
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "mathrl greedy lenient" in done.stdout and "TRL mean@2 strict" in done.stdout


def test_sweep_picks_held_out_accuracy_then_training_reward():
    from learn_vs_trl import sweep_score

    def run(acc, rewards):
        return {"evals": [{"greedy_lenient": 0.0}, {"greedy_lenient": acc}],
                "steps": [{"reward/mean": r} for r in rewards]}

    runs = {"c": run(0.0, [0.0, 0.5, 0.4, 0.3]), "b": run(0.1, [0.0]), "a": run(0.0, [0.9, 0.9])}
    assert max(runs, key=lambda k: sweep_score(runs[k])) == "b"
    del runs["b"]
    assert max(runs, key=lambda k: sweep_score(runs[k])) == "a"
    assert sweep_score(run(0.2, [])) == (0.2, 0.0)
