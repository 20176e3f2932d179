"""Experiment trackers: TensorBoard, Weights & Biases and MLflow, each an optional extra.

A tracker gets what the run store gets, under the same keys: every step's metrics
(`reward/mean`, `time/step`, ...) and each evaluation as `eval/accuracy`, `eval/format`,
`eval/n` at its step. Trackers are never needed to train: a tracker that fails while the run
is going is switched off with a warning, and the run goes on.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from services.config import RunConfig, TrackingConfig

log = logging.getLogger("mathrl.trackers")
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
INSTALL_HINT = "pip install 'mathrl[trackers]'"


class TrackerUnavailable(RuntimeError):
    """A tracker named in the config whose package is not installed."""


class Tracker(Protocol):
    name: str

    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def close(self, status: str) -> None:
        """`status`: the run's final status (completed, failed, cancelled)."""


def installed(backend: str) -> bool:
    return importlib.util.find_spec(PACKAGES[backend]) is not None


def chosen(tcfg: TrackingConfig) -> list[str]:
    """The trackers a run uses: the configured ones, else TensorBoard when installed."""
    if tcfg.backends is None:
        return ["tensorboard"] if installed("tensorboard") else []
    missing = [b for b in tcfg.backends if not installed(b)]
    if missing:
        raise TrackerUnavailable(f"tracking.backends names {', '.join(missing)}, not "
                                 f"installed here: {INSTALL_HINT}")
    return list(dict.fromkeys(tcfg.backends))


def _flat(d: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, list) else str(v)
    return out


class TensorBoardTracker:
    name = "tensorboard"

    def __init__(self, logdir: Path, config: dict):
        from torch.utils.tensorboard import SummaryWriter

        self.logdir = logdir
        self._w = SummaryWriter(str(logdir))
        # Markdown code block: TensorBoard's text tab renders it as the config, verbatim.
        self._w.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self._w.add_scalar(k, v, step)
        self._w.flush()  # per step, so a running `tensorboard` shows the run live

    def close(self, status: str) -> None:
        self._w.add_text("status", status)
        self._w.close()


class WandbTracker:
    name = "wandb"

    def __init__(self, tcfg: TrackingConfig, run_dir: Path, name: str, config: dict):
        import wandb

        self._run = wandb.init(
            project=tcfg.wandb_project or os.environ.get("WANDB_PROJECT") or "mathrl",
            entity=tcfg.wandb_entity, name=name, dir=str(run_dir), config=config,
            mode=tcfg.wandb_mode,  # None: wandb reads WANDB_MODE itself
            # console="off": wandb would otherwise capture this process's stdout/stderr (the
            # orchestrator's console); silent: no banners between the step lines.
            settings=wandb.Settings(console="off", silent=True, reinit="create_new"))
        self.dir = Path(self._run.dir).parent

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self._run.log(dict(metrics), step=step)

    def close(self, status: str) -> None:
        self._run.finish(exit_code=0 if status == "completed" else 1)


class MlflowTracker:
    name = "mlflow"
    STATUS = {"completed": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}
    BAD_KEY = re.compile(r"[^/\w.\- :]")  # MLflow's allowed metric-name characters

    def __init__(self, tcfg: TrackingConfig, store_dir: Path, name: str, config: dict):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        # MLflow gives its logger a stderr handler of its own on import; hand its records to
        # ours instead, so that its INFO lines go to the log file, not between the step lines.
        mlflow_log = logging.getLogger("mlflow")
        mlflow_log.handlers.clear()
        mlflow_log.propagate = True
        self.uri = (tcfg.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
                    or f"sqlite:///{(store_dir / 'mlflow.db').resolve()}")
        self._c = MlflowClient(tracking_uri=self.uri)
        exp = self._c.get_experiment_by_name(tcfg.mlflow_experiment)
        if exp is not None:
            exp_id = exp.experiment_id
        else:
            # A local store keeps (future) artifacts beside itself, not in the cwd.
            local = self.uri.startswith("sqlite:") and not os.environ.get("MLFLOW_TRACKING_URI")
            art = (store_dir / "mlartifacts").resolve().as_uri() if local else None
            exp_id = self._c.create_experiment(tcfg.mlflow_experiment, artifact_location=art)
        self.run_id = self._c.create_run(exp_id, run_name=name).info.run_id
        params = [Param(k, v[:6000]) for k, v in _flat(config).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self._c.log_batch(self.run_id, params=params[i:i + 100])

    def log(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._c.log_batch(self.run_id, metrics=[
            Metric(self.BAD_KEY.sub("_", k), float(v), now, step) for k, v in metrics.items()])

    def close(self, status: str) -> None:
        self._c.set_terminated(self.run_id, self.STATUS.get(status, "FINISHED"))


class Trackers:
    """The run's trackers as one metrics sink (`GRPOLoop` calls it with each step)."""

    def __init__(self, trackers: Iterable[Tracker] = ()):
        self.trackers = list(trackers)

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        self.log(step, metrics)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for t in list(self.trackers):
            try:
                t.log(step, metrics)
            except Exception as e:  # noqa: BLE001 - a tracker must never stop a run
                log.warning("tracker %s failed (%s: %s); it is off for the rest of this run",
                            t.name, type(e).__name__, e, exc_info=True)
                self.trackers.remove(t)

    def log_eval(self, step: int, result: dict) -> None:
        # Benchmark keys already read `eval/<benchmark>/<metric>`; the legacy ones get it.
        self.log(step, {k if k.startswith("eval/") else f"eval/{k}": float(v)
                        for k, v in result.items() if k != "step" and isinstance(v, int | float)})

    def close(self, status: str) -> None:
        for t in self.trackers:
            try:
                t.close(status)
            except Exception as e:  # noqa: BLE001 - closing one must not skip the others
                log.warning("tracker %s did not close cleanly: %s", t.name, e, exc_info=True)
        self.trackers = []

    def describe(self) -> str:
        return ", ".join(t.name for t in self.trackers) or "none"


def open_trackers(cfg: RunConfig, run_dir: Path, *, name: str | None = None) -> Trackers:
    """Start the trackers of `cfg` for one run writing to `run_dir` (raises TrackerUnavailable
    for a named tracker that is not installed, before any is started)."""
    tcfg = cfg.tracking
    backends = chosen(tcfg)
    name = name or cfg.name
    config = cfg.model_dump(mode="json")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    out = Trackers()
    try:
        for b in backends:
            if b == "tensorboard":
                logdir = (Path(tcfg.tensorboard_dir) / name if tcfg.tensorboard_dir
                          else run_dir / "tensorboard")
                out.trackers.append(TensorBoardTracker(logdir, config))
            elif b == "wandb":
                out.trackers.append(WandbTracker(tcfg, run_dir, name, config))
            elif b == "mlflow":
                out.trackers.append(MlflowTracker(tcfg, run_dir.parent, name, config))
    except BaseException:
        out.close("failed")
        raise
    return out
