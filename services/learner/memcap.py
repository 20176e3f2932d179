"""The learner's share of the card, from the memory plan, enforced by torch's allocator.

`torch.cuda.set_per_process_memory_fraction` makes an allocation past the share fail in this
process instead of taking memory the generator's plan counted on. When it fails, the error
names the plan's learner components and the setting to lower, not a CUDA OOM trace.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from services.config import RunConfig

log = logging.getLogger(__name__)
GiB = 1 << 30


def use_expandable_segments() -> None:
    """Let torch's CUDA allocator grow segments instead of caching fixed blocks, unless the
    user configured it: uncapped on an H200 the 12gb learner reserved 3.64 GiB for a 2.99 GiB
    peak (docs/benchmarks.md), more slack than the cap's margin. The compose learner sets the
    same. Read when CUDA initialises, so call this before the first CUDA call."""
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")


@dataclass
class MemoryCap:
    cap_bytes: int
    components: dict[str, int]
    pass_setting: str = "learner.micro_batch_size"
    """What sizes a pass: the token budget when the config sets one, else the count."""

    @classmethod
    def from_plan(cls, cfg: RunConfig, model_path: str) -> MemoryCap | None:
        if not cfg.learner.cap_cuda_memory or not torch.cuda.is_available():
            return None
        from services.memory import load_shape, plan_run
        from services.memory.plan import pass_setting

        try:
            side = plan_run(load_shape(model_path), cfg).learner
        except (FileNotFoundError, KeyError, ValueError) as e:
            log.warning("no memory plan for %s (%s): the learner is not capped", model_path, e)
            return None
        # The allocator's cap excludes the CUDA context, which lives outside it.
        cap = side.total - side.components["context"] + int(cfg.gpu.margin_gb * GiB)
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total), 0)
        log.info("learner capped at %.2f GiB of %.1f GiB (memory plan)", cap / GiB, total / GiB)
        return cls(cap, dict(side.components), pass_setting(cfg))

    def explain(self, err: BaseException) -> str:
        dynamic = {k: self.components[k] for k in ("activations", "logprobs")}
        name = max(dynamic, key=dynamic.get)
        setting = {"activations": f"{self.pass_setting} (or learner.gradient_checkpointing)",
                   "logprobs": "learner.logprob_chunk_tokens"}[name]
        plan = ", ".join(f"{k} {v / GiB:.2f}" for k, v in self.components.items())
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        return (f"the learner needed more than its planned {self.cap_bytes / GiB:.2f} GiB "
                f"(plan, GiB: {plan}); the largest per-step component is learner.{name}: lower "
                f"{setting}, or set learner.cap_cuda_memory = false to run uncapped. "
                f"CUDA said: {first}")
