"""Learning-rate schedules as a pure function of the optimizer step, so that a learner restored
from a checkpoint (which restores its step count) is back on the same curve with no scheduler
state to save."""

from __future__ import annotations

from typing import Literal


def lr_factor(step: int, total: int, schedule: Literal["constant", "linear"],
              warmup: int = 0) -> float:
    """Multiplier of the peak learning rate for optimizer step `step` (0 = the first).

    Same numbers as transformers' `get_constant_schedule_with_warmup` /
    `get_linear_schedule_with_warmup` (whose scheduler steps after each optimizer step):
    `step / warmup` while warming up, then 1 (`constant`) or `(total - step) / (total - warmup)`
    down to 0 at `total` (`linear`)."""
    if step < warmup:
        return step / max(1, warmup)
    if schedule == "constant":
        return 1.0
    return max(0.0, (total - step) / max(1, total - warmup))
