"""What `model.dtype = "auto"` means on each device: one rule for vLLM, the learner and the
memory plan, so that the three never disagree about the bytes of a weight.

CUDA: bfloat16. A CPU: bfloat16 where it has bf16 instructions (AVX512-BF16 or AMX), where
oneDNN's bf16 matmuls ran 3.7x the fp32 GFLOP/s (docs/benchmarks.md); float32 elsewhere,
since a CPU without them emulates bf16 arithmetic and would run slower than in fp32.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@cache
def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU flags list bf16 instructions (False where they cannot be read)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return bool(NATIVE_BF16_FLAGS & set(value.split()))
    return False


def resolve_dtype(name: str, device: str) -> str:
    """The concrete dtype name for a config's `model.dtype` on `device` ("cuda" or "cpu")."""
    if name != "auto":
        return name
    if device == "cuda" or cpu_has_native_bf16():
        return "bfloat16"
    return "float32"
