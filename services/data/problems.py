"""The `Problem` record every loader returns, and the small answer normaliser they share.

Answers are stored as the *final answer string* a grader compares against: GSM8K's
``#### 1,234`` becomes ``1234``, AMC's float ``27.0`` becomes ``27``, LaTeX answers such as
``\\frac{14}{3}`` are kept verbatim (the reward's math verifier parses LaTeX itself).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# A plain number, optionally with thousands separators ("1,234,567"). Commas are only removed
# in this exact grouping: MATH answers like "1,2" or "(3, -1)" are lists/tuples, not numbers.
_PLAIN_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


class Problem(BaseModel):
    """One question with its reference final answer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    question: str
    answer: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    """The data row's other fields (test cases, units, tolerances, ...), handed to the reward
    functions as they are; empty for synthetic problems."""


def _strip_dollars(s: str) -> str:
    """Drop math delimiters ``$..$`` and a currency ``\\$`` around the answer."""
    s = s.strip()
    for prefix in ("\\$", "$"):
        if s.startswith(prefix):
            s = s[len(prefix) :].strip()
    if s.endswith("$") and not s.endswith("\\$"):
        s = s[:-1].strip()
    return s


def _normalize_number(s: str) -> str:
    """``"+1,234.50"`` -> ``"1234.5"``, ``"27.0"`` -> ``"27"``, ``"025"`` -> ``"25"``."""
    s = s.replace(",", "")
    sign = "-" if s.startswith("-") else ""
    s = s.lstrip("+-")
    whole, _, frac = s.partition(".")
    whole = whole.lstrip("0") or "0"
    frac = frac.rstrip("0")
    out = f"{whole}.{frac}" if frac else whole
    return "0" if out == "0" else sign + out


def _normalize_answer(raw: object) -> str:
    """Final-answer string from a dataset value (str, int or float); LaTeX is kept as is.

    Deliberately tiny and local (the reward module does the real equivalence checking); it
    only makes plain numbers canonical so logs and exact-match metrics are not fooled by
    ``27.0`` vs ``27`` or ``1,234`` vs ``1234``.
    """
    if isinstance(raw, bool):
        raise TypeError(f"answer must be a string or a number, got {raw!r}")
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, float):
        if raw != raw or raw in (float("inf"), float("-inf")):
            raise ValueError(f"answer is not a finite number: {raw!r}")
        if raw.is_integer():
            return str(int(raw))
        raw = repr(raw)  # "0.5"; exponent forms like "1e-05" are kept as they are
    if not isinstance(raw, str):
        raise TypeError(f"answer must be a string or a number, got {type(raw).__name__}")
    s = _strip_dollars(raw)
    return _normalize_number(s) if _PLAIN_NUMBER.fullmatch(s) else s
