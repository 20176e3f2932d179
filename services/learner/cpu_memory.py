"""Keep a CPU learner's memory flat over a long run.

Two things grew a bf16 SmolLM2 learner by ~0.2 GB per step (1.55 -> 3.06 GB RSS over 8 steps,
flat in fp32; benchmarks/learner_speed.py batches):
- oneDNN caches one primitive per matmul shape (1,024 by default), and with bf16 weights a
  primitive holds reordered weight buffers. Every step brings new sequence lengths, so the
  cache filled with shapes never seen again. A bf16 CPU learner pads shared-prompt rows to a
  multiple of `ROW_MULTIPLE` (a handful of shapes; padding is masked, never scored, and counted
  in `perf/padding_share`) and the cache is capped at `ONEDNN_CACHE_CAPACITY`: 0.93 GB retained
  and 1.99 GB peak, flat over 8 steps, at the same step time (a cache of 8 re-created
  primitives every call: 40% slower).
- glibc keeps freed activation memory in its heap: `release_free_heap` after each step hands
  ~0.7-1 GB back while the generator runs.
"""

from __future__ import annotations

import ctypes
import os
import sys
from functools import cache

ROW_MULTIPLE = 64
ONEDNN_CACHE_CAPACITY = 128


def bound_onednn_cache() -> None:
    """Cap oneDNN's primitive cache unless the user set it; read when the first primitive is
    created, so call this before the model runs."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_CACHE_CAPACITY))


@cache
def _malloc_trim():
    """glibc's `malloc_trim`, looked up once (None off Linux, or on musl and other libcs)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_heap() -> None:
    """Return the heap's free pages to the OS (a no-op where there is no `malloc_trim`)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
