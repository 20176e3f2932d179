"""`mathrl eval` through a real vLLM server: base model and a LoRA adapter in one server start,
exact scores on a fixture with known answers, and a well-formed JSON report."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, tiny_config

from services.data import DEFAULT_INSTRUCTION
from services.evals import build_prompt
from services.learner.learner import Learner
from services.schemas import TrainBatch, TrainSequence

pytestmark = pytest.mark.slow

PAIRS = [(1, 2), (0, 3), (2, 2), (4, 1), (2, 1), (5, 5)]  # three of the six sums are 3


def forced_adapter(model_dir, run_dir, questions: list[str]) -> str:
    """A LoRA adapter trained (a few policy-gradient steps with advantage 1 on one fixed
    completion) to answer `\\boxed{3}` to these prompts, whatever they ask."""
    from transformers import AutoTokenizer

    learner = Learner(tiny_config(model_dir), model_path=str(model_dir), run_dir=str(run_dir))
    tok = AutoTokenizer.from_pretrained(model_dir)
    target = (tok("\\boxed{3}", add_special_tokens=False)["input_ids"]
              + [tok.convert_tokens_to_ids("<|im_end|>")])
    prompts = [build_prompt(tok, q, "zero-shot", instruction=DEFAULT_INSTRUCTION)
               for q in questions]
    for step in range(12):
        learner.train_step(TrainBatch(step=step, sequences=[
            TrainSequence(prompt_ids=p, completion_ids=target, advantage=1.0) for p in prompts]))
    return learner.publish().path


def test_eval_compare_base_and_adapter(tiny_model_dir, tmp_path):
    questions = [f"What is {a} + {b}?" for a, b in PAIRS]
    data = tmp_path / "sums.jsonl"
    data.write_text("\n".join(json.dumps({"problem": q, "answer": a + b})
                              for q, (a, b) in zip(questions, PAIRS, strict=True)) + "\n")
    adapter = forced_adapter(tiny_model_dir, tmp_path / "learner", questions)
    out_file = tmp_path / "report.json"
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "eval", "--model", str(tiny_model_dir),
         "--compare", adapter, "--dataset", f"sums={data}", "--samples", "3",
         "--max-new-tokens", "8", "--max-model-len", "256", "--concurrency", "4",
         "--out", str(out_file), "--json"],
        capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    line = json.loads(out.stdout.strip().splitlines()[-1])
    base, tuned = line["summary"]["base"]["sums"], line["summary"]["adapter"]["sums"]
    # The adapter answers \boxed{3} everywhere: exactly the three sums that are 3 are right.
    assert tuned["greedy"] == tuned["pass@1"] == 0.5 and tuned["boxed"] == 1.0
    assert base["pass@1"] == 0.0  # the random base model does not box the right sum
    for s in (base, tuned):
        assert s["n"] == 6 and {"mean@3", "maj@3", "pass@2", "pass@3"} <= set(s)

    report = json.loads(out_file.read_text())
    assert report["config"]["samples"] == 3 and report["config"]["datasets"] == ["sums"]
    assert [m["label"] for m in report["models"]] == ["base", "adapter"]
    items = report["models"][1]["benchmarks"][0]["items"]
    assert [it["gold"] for it in items] == [str(a + b) for a, b in PAIRS]
    for it in items:
        assert "What is" in it["prompt"] and len(it["samples"]) == 3
        assert it["greedy"]["answer"] == "3"
        assert it["greedy"]["correct"] == (it["gold"] == "3")
        # The summary is recomputed from the items: majority and sample verdicts agree.
        majority = it["majority"]
        assert majority["correct"] == (majority["answer"] is not None
                                       and majority["answer"].strip() == it["gold"])
    mean = sum(s["correct"] for it in items for s in it["samples"]) / 18
    assert tuned["mean@3"] == pytest.approx(mean)
    assert tuned["maj@3"] == pytest.approx(sum(it["majority"]["correct"] for it in items) / 6)
    assert "sums (n=6)" in _table(report)


def _table(report: dict) -> str:
    from orchestrator.cli.eval_report import table

    text = table(report)
    assert "greedy" in text and "maj@3" in text and "base" in text and "adapter" in text
    # The greedy score is called `greedy` (pass@1 is its stored alias, not a second row), and
    # every score carries its standard error.
    assert "pass@1" not in text and "±" in text
    return text
