"""Step metrics sinks: a line-buffered JSONL file and a one-line console summary."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO

CONSOLE_KEYS = ("reward/mean", "reward/accuracy", "reward/format", "completion/mean_tokens",
                "loss/kl", "time/generate", "time/reward", "time/learn", "time/sync", "time/step")


class JsonlSink:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", buffering=1)  # noqa: SIM115 - closed in close()

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        self._f.write(json.dumps({"step": step, **metrics}) + "\n")

    def close(self) -> None:
        self._f.close()


class ConsoleSink:
    def __init__(self, total_steps: int, stream: TextIO = sys.stdout):
        self.total = total_steps
        self.stream = stream

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        parts = [f"{k.split('/')[-1] if k.startswith('time/') else k}={metrics[k]:.3g}"
                 for k in CONSOLE_KEYS if k in metrics]
        print(f"step {step}/{self.total} " + " ".join(parts), file=self.stream, flush=True)


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
