"""Named benchmarks from the shared public copies (offline), prompt formats, `--dataset`
parsing, and the demo's held-out eval set."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT, SHARED_DATA

from orchestrator.cli.eval_report import parse_datasets
from orchestrator.run.evaluate import benchmark_configs, benchmark_problems, training_problems
from services.config import load_config
from services.evals import BENCHMARKS, load_benchmark, stop_strings
from services.evals.benchmarks import fewshot_text
from services.rewards import GraderPool, score_math

FILES = {"gsm8k": "gsm8k/test.jsonl", "math500": "math500/test.jsonl",
         "aime24": "aime24/test.jsonl", "amc23": "amc23/test.jsonl"}
# CI has ../shared beside the checkout; a clone elsewhere skips what reads it.
needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(),
                                  reason=f"shared data folder {SHARED_DATA} is absent")


@needs_shared
def test_named_benchmarks_load_their_public_files():
    sets = {name: load_benchmark(name, SHARED_DATA / rel) for name, rel in FILES.items()}
    assert {k: len(v) for k, v in sets.items()} == {"gsm8k": 1319, "math500": 500,
                                                     "aime24": 30, "amc23": 40}
    assert set(BENCHMARKS) == set(FILES)
    # Normalised final answers: GSM8K's "#### 1,234" and AMC's float 27.0 become plain numbers.
    assert all("####" not in p.answer and "," not in p.answer for p in sets["gsm8k"])
    assert all(p.answer.lstrip("-").isdigit() for p in sets["amc23"] + sets["aime24"])
    assert sets["math500"][0].id.startswith("test/")  # MATH-500 keeps its unique ids
    assert len(load_benchmark("math500", SHARED_DATA / FILES["math500"], limit=7)) == 7


@needs_shared
def test_every_gold_answer_is_graded_equal_to_itself():
    """Each benchmark's answers parse in the reward's grader: a boxed gold scores correct."""
    probs = [p for name, rel in FILES.items()
             for p in load_benchmark(name, SHARED_DATA / rel, limit=200)]
    with GraderPool(n_workers=2) as pool:
        scores = score_math(pool, [f"\\boxed{{{p.answer}}}" for p in probs],
                            [p.answer for p in probs], 0.0)
    wrong = [p.answer for p, s in zip(probs, scores, strict=True) if not s.correct]
    assert len(probs) == 470 and not wrong, wrong


def test_any_file_with_named_fields(tmp_path):
    f = tmp_path / "mine.jsonl"
    f.write_text("\n".join(json.dumps({"q": f"What is {i} * 2?", "sol": f"... #### {2 * i}"})
                           for i in range(3)) + "\n")
    probs = load_benchmark("mine", f, question_field="q", answer_field="sol")
    assert [p.answer for p in probs] == ["0", "2", "4"]
    with pytest.raises(ValueError, match="unknown benchmark"):
        load_benchmark("nonesuch")
    # `arith` asks each sum once; asking for more than exist gives all 100 single-digit sums.
    sums = load_benchmark("arith", limit=200)
    assert len(sums) == len({p.question for p in sums}) == 100


def test_dataset_specs(tmp_path):
    f = tmp_path / "my set.jsonl"
    f.write_text("{}\n")
    assert parse_datasets(f"gsm8k, math500=/x/m.jsonl,{f},arith,org/data:cfg") == [
        ("gsm8k", None), ("math500", "/x/m.jsonl"), ("my_set", str(f)), ("arith", None),
        ("data", "hf:org/data:cfg")]
    for bad in ("gsm8k,gsm8k", "nonesuch", ""):
        with pytest.raises(ValueError):
            parse_datasets(bad)


def test_fewshot_prompt_is_the_8_shot_cot_text():
    text = fewshot_text("How many?")
    assert text.count("Q: ") == 9 and text.count("The answer is") == 8
    assert text.endswith("Q: How many?\nA:")
    assert "Q:" in stop_strings("few-shot") and stop_strings("zero-shot") is None


def test_demo_eval_set_is_held_out_of_training():
    cfg = load_config(ROOT / "configs" / "smollm2-arith-cpu.toml")
    evals = [p for b in benchmark_configs(cfg.eval) for p in benchmark_problems(cfg, b)]
    train = training_problems(cfg)
    asked = {p.question for p in evals}
    assert len(asked) == len(evals) == 30  # distinct sums, each asked once
    assert train and not asked & {p.question for p in train}
    # The hold-out is what makes them disjoint: without it the draws overlap.
    mixed = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"hold_out": False})})
    assert asked & {p.question for p in training_problems(mixed)}


def test_eval_config_lists_benchmarks():
    from pydantic import ValidationError

    from services.config import EvalConfig

    ev = EvalConfig(enabled=True, benchmarks=[{"name": "gsm8k", "samples": 4},
                                              {"name": "math500", "prompt": "few-shot"}])
    assert [b.name for b in benchmark_configs(ev)] == ["gsm8k", "math500"]
    assert benchmark_configs(EvalConfig(limit=5))[0].name == "arith"  # the legacy fields
    for bad in ([{"name": "gsm8k"}, {"name": "gsm8k"}], [{"name": "x y"}],
                [{"name": "gsm8k", "samples": -1}], [{"name": "gsm8k", "prompt": "2-shot"}]):
        with pytest.raises(ValidationError):
            EvalConfig(benchmarks=bad)
