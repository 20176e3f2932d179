"""Experiment trackers (TensorBoard, W&B offline, MLflow on a local store), read back with each
library's own reader, and the console of a real `mathrl train` run."""

from __future__ import annotations

import logging
import math
import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT, tiny_config
from tracker_readers import mlflow_run, tensorboard_scalars, wandb_run

from orchestrator.run.logs import reset_logging, setup_logging
from orchestrator.run.metrics import read_jsonl
from orchestrator.run.trackers import Trackers, TrackerUnavailable, chosen, open_trackers
from services.config import RunConfig, TrackingConfig

ALL = ["tensorboard", "wandb", "mlflow"]
KEYS = ("reward/mean", "reward/std", "reward/accuracy", "reward/format", "completion/mean_tokens",
        "completion/clipped_frac", "loss/policy", "loss/kl", "optim/grad_norm", "optim/lr",
        "time/generate", "time/reward", "time/learn", "time/sync", "time/step",
        "perf/rollout_tokens_per_s", "adapter/version")


def step_metrics(step: int) -> dict[str, float]:
    return {k: round(math.sin(i + step) + 1.5, 6) * (step + 1) for i, k in enumerate(KEYS)}


def assert_same(got: dict[str, dict[int, float]], want: dict[int, dict[str, float]], *,
                rel: float = 1e-9) -> None:
    """`got` {key: {step: value}} holds exactly `want` {step: {key: value}}."""
    keys = {k for m in want.values() for k in m}
    assert keys <= set(got), sorted(keys - set(got))
    for k in keys:
        assert sorted(got[k]) == sorted(s for s, m in want.items() if k in m), k
        for s, v in got[k].items():
            assert v == pytest.approx(want[s][k], rel=rel), (k, s)


def test_each_tracker_writes_what_the_store_gets(tmp_path):
    cfg = RunConfig.model_validate({"name": "trk", "tracking": {
        "backends": ALL, "wandb_mode": "offline"}})
    run_dir = tmp_path / "runs" / "trk-1"
    trackers = open_trackers(cfg, run_dir, name="trk-1")
    assert trackers.describe() == "tensorboard, wandb, mlflow"
    want = {s: step_metrics(s) for s in (1, 2, 3)}
    trackers.log_eval(0, {"step": 0, "accuracy": 0.25, "format": 0.5, "n": 8})
    for s, m in want.items():
        trackers(s, m)  # the loop calls its sinks like this
    trackers.log_eval(3, {"step": 3, "accuracy": 0.75, "format": 1.0, "n": 8,
                          "eval/gsm8k/maj@4": 0.5})
    trackers.close("completed")
    want[0] = {"eval/accuracy": 0.25, "eval/format": 0.5, "eval/n": 8.0}
    # Benchmark keys keep their own name (not eval/eval/...).
    want[3].update({"eval/accuracy": 0.75, "eval/format": 1.0, "eval/n": 8.0,
                    "eval/gsm8k/maj@4": 0.5})

    # TensorBoard stores scalars as float32.
    assert_same(tensorboard_scalars(run_dir / "tensorboard"), want, rel=1e-6)

    wb = wandb_run(run_dir)
    assert wb["name"] == "trk-1" and wb["exit_code"] == 0
    assert wb["config"]["lora"]["rank"] == cfg.lora.rank
    history = {}
    for s, row in wb["history"].items():
        for k, v in row.items():
            history.setdefault(k, {})[s] = v
    assert_same(history, want)

    ml = mlflow_run(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}", "trk-1")
    assert ml["status"] == "FINISHED"
    assert ml["params"]["lora.rank"] == str(cfg.lora.rank)
    # MLflow refuses `@` in metric names: the tracker writes `maj_4` for `maj@4`.
    assert_same(ml["metrics"], {s: {k.replace("@", "_"): v for k, v in m.items()}
                                for s, m in want.items()})


def test_tensorboard_is_the_default_and_a_missing_package_is_named(monkeypatch, tmp_path):
    assert chosen(TrackingConfig()) == ["tensorboard"]
    assert chosen(TrackingConfig(backends=[])) == []
    monkeypatch.setitem(sys.modules, "wandb", None)  # how Python sees an uninstalled package
    cfg = RunConfig.model_validate({"tracking": {"backends": ["tensorboard", "wandb"]}})
    with pytest.raises(TrackerUnavailable, match=r"wandb.*pip install 'mathrl\[trackers\]'"):
        open_trackers(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "tensorboard").exists()  # checked before any is started


def test_a_failing_tracker_is_switched_off_and_the_rest_go_on(tmp_path, caplog):
    class Unreachable:
        name = "remote"

        def log(self, step, metrics):
            raise ConnectionError("tracking server went away")

        def close(self, status):
            pass

    cfg = RunConfig.model_validate({"tracking": {"backends": ["tensorboard"]}})
    tb = open_trackers(cfg, tmp_path).trackers[0]
    trackers = Trackers([Unreachable(), tb])
    with caplog.at_level(logging.WARNING, logger="mathrl.trackers"):
        for s in (1, 2):
            trackers(s, {"reward/mean": float(s)})
    trackers.close("completed")
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == ["tracker remote failed"]
    assert tensorboard_scalars(tmp_path / "tensorboard") == {"reward/mean": {1: 1.0, 2: 2.0}}


def test_console_filter_levels(tmp_path, capsys, request):
    """Library info (an httpx request line) goes to the file only, unless the level is debug;
    mathrl's lines and every warning reach the console; tracebacks stay in the file."""
    for level in ("info", "debug"):
        log_file = setup_logging(tmp_path / f"{level}.log", level)
        request.addfinalizer(reset_logging)
        logging.getLogger("httpx").info('HTTP Request: POST http://x/v1/completions "200 OK"')
        logging.getLogger("ray").warning("object store is full")
        logging.getLogger("mathrl.run").info("run r1 (tiny): step 1/3  reward 0.5")
        try:
            raise RuntimeError("learner died")
        except RuntimeError:
            logging.getLogger("mathrl.scheduler").error("run r1 failed", exc_info=True)
        err = capsys.readouterr().err
        assert ("HTTP Request" in err) == (level == "debug"), err
        assert ("Traceback" in err) == (level == "debug"), err
        assert "object store is full" in err and "step 1/3  reward 0.5" in err
        text = log_file.read_text()
        assert "HTTP Request" in text and "Traceback" in text and "learner died" in text


@pytest.mark.slow
def test_train_console_and_trackers(stack, tiny_model_dir, tmp_path):
    """`mathrl train` on the session's vLLM server: a console of step lines without request
    logs, the full log in a file, and every tracker holding the run's metrics.jsonl."""
    from test_service import _toml

    cfg = tiny_config(tiny_model_dir, name="console", schedule__steps=3,
                      generator__url=stack.server.url,
                      tracking__backends=ALL, tracking__wandb_mode="offline")
    (tmp_path / "train.toml").write_text(_toml(cfg))
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "train", str(tmp_path / "train.toml"),
         "--out-dir", str(tmp_path / "runs")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "WANDB_SILENT": "true"})
    console = out.stdout + out.stderr
    assert out.returncode == 0, console[-4000:]
    run_dir = tmp_path / "runs" / "console"
    steps = re.findall(r"^\d\d:\d\d:\d\d step (\d)/3  reward [\d.]+  acc [\d.]+%  .*tokens "
                       r"[\d.]+  .*[\d.]+s \(gen [\d.]+ reward [\d.]+ learn [\d.]+ sync [\d.]+\)$",
                       console, re.M)
    assert steps == ["1", "2", "3"], console[-4000:]
    assert "HTTP Request" not in console, console[-4000:]
    assert "(Learner pid=" not in console  # Ray's worker output stays in Ray's logs
    assert f"logs: {run_dir / 'logs' / 'train.log'}" in console
    # The request lines were there all along, in the file the console names.
    assert "HTTP Request: POST" in (run_dir / "logs" / "train.log").read_text()

    rows = read_jsonl(run_dir / "metrics.jsonl")
    want = {r["step"]: {k: v for k, v in r.items() if k != "step"} for r in rows}
    assert sorted(want) == [1, 2, 3]
    assert_same(tensorboard_scalars(run_dir / "tensorboard"), want, rel=1e-6)
    history: dict = {}
    for s, row in wandb_run(run_dir)["history"].items():
        for k, v in row.items():
            history.setdefault(k, {})[s] = v
    assert_same(history, want)
    ml = mlflow_run(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}", "console")
    assert ml["status"] == "FINISHED"
    assert_same(ml["metrics"], want)
