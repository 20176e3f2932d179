"""`mathrl eval`: greedy accuracy of a base model + adapter through a real vLLM server."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, tiny_config

from services.learner.learner import Learner

pytestmark = pytest.mark.slow


def test_eval_cli_with_adapter(tiny_model_dir, tmp_path):
    cfg = tiny_config(tiny_model_dir)
    adapter = Learner(cfg, model_path=str(tiny_model_dir), run_dir=str(tmp_path)).publish()
    data = tmp_path / "sums.jsonl"
    data.write_text("\n".join(json.dumps({"problem": f"What is {a} + 1?", "answer": a + 1})
                              for a in range(5)) + "\n")
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "eval", "--model", str(tiny_model_dir),
         "--adapter", adapter.path, "--dataset", str(data), "--max-new-tokens", "8",
         "--max-model-len", "256", "--json"],
        capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["n"] == 5 and report["adapter"] == adapter.path
    assert 0.0 <= report["accuracy"] <= 1.0  # a random model: the point is the whole path runs
