"""Test hook for ``GraderPool``: a real work function that can misbehave on request.

It lives in the package (not in tests/) because spawned workers must be able to import
it by module path, exactly like the production ``verify_answer``.
"""

from __future__ import annotations

import os
import time

from services.rewards.verify import verify_answer

__all__ = ["work_fn_for_tests"]


def work_fn_for_tests(pred: str, gold: str) -> bool:
    """Real work function with magic predictions that misbehave on purpose.

    Used only when a pool is built with ``_work_fn=work_fn_for_tests``; it exercises the
    kill/respawn paths deterministically (math-verify 0.9 itself stops at its alarm on
    every hostile input we tried). ``__sleep__`` hangs, ``__exit__`` kills the process,
    ``__raise__`` raises; anything else is graded normally.
    """
    if pred == "__sleep__":
        time.sleep(3600)
    if pred == "__exit__":
        os._exit(3)
    if pred == "__raise__":
        raise RuntimeError("requested by test")
    return verify_answer(pred, gold)
