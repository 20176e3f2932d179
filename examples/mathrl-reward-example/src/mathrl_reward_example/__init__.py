"""Two reward functions in the shape mathrl calls them:
``fn(prompt, completion, gold, metadata, options) -> score | (score, {part: value})``.

Each declares its options as a pydantic model on the function's ``options`` attribute; mathrl
validates a run's options against it when the run is submitted and shows the fields' docstrings
in ``mathrl rewards``. They run in mathrl's grader processes, one completion at a time, under
the run's ``reward.timeout_s``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["LengthOptions", "UnitsOptions", "length_penalty", "units"]


class LengthOptions(BaseModel):
    # extra="forbid": a misspelt option is refused at submit instead of silently ignored.
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    target_chars: int = Field(200, ge=1, le=100_000)
    """Completions up to this many characters cost nothing."""
    max_penalty: float = Field(1.0, gt=0.0, le=10.0)
    """The penalty of a completion twice the target or longer (linear in between)."""


def length_penalty(prompt: str, completion: str, gold: str, metadata: dict[str, Any],
                   options: LengthOptions) -> tuple[float, dict[str, float]]:
    """A penalty (a score <= 0) for completions longer than `target_chars`, growing linearly
    to `-max_penalty` at twice the target. Part: `over_target` (1 when longer)."""
    over = max(0, len(completion) - options.target_chars) / options.target_chars
    return -options.max_penalty * min(1.0, over), {"over_target": float(over > 0)}


length_penalty.options = LengthOptions


class UnitsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    field: str = "unit"
    """The data row's field (the problem's metadata) that holds the expected unit."""
    case_sensitive: bool = False
    """Whether "Km" counts for "km"."""


def units(prompt: str, completion: str, gold: str, metadata: dict[str, Any],
          options: UnitsOptions) -> float:
    """1 when the completion names the unit its data row gives (`metadata[field]`), else 0;
    0 for rows without one."""
    unit = metadata.get(options.field)
    if not isinstance(unit, str) or not unit:
        return 0.0
    if options.case_sensitive:
        return float(unit in completion)
    return float(unit.lower() in completion.lower())


units.options = UnitsOptions
