"""The `reward` section of a run config: the reward functions a run names (installed under the
entry-point group `mathrl.rewards`, services/rewards/registry.py), or the built-in one the
older `kind` / `answer_format` / `format_weight` fields stand for."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from services.config_base import Section


class RewardFunctionConfig(Section):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    """An installed reward function (entry-point group `mathrl.rewards`; `mathrl rewards`
    lists them): the built-ins `math`, `final-answer-line`, `digit_share`, `http`, or a
    plugin's. `POST /runs` refuses a name not installed (422)."""
    weight: float = Field(1.0, ge=-100.0, le=100.0)
    """Its score's weight in the reward (the reward is the weighted sum over functions)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Its options, checked against the model the function declares (`mathrl rewards` shows
    them); unknown or out-of-range options are refused at submit (422)."""


class RewardConfig(Section):
    kind: Literal["math", "digit_share"] = "math"
    """`math`: math-verify correctness of the final answer plus the format reward;
    `digit_share`: share of completion tokens containing a digit (a dense toy reward that a
    random tiny model can learn; used by tests). Unused when `functions` is given."""
    format_weight: float = Field(0.1, ge=0.0, le=10.0)
    """Weight of the format reward (see `answer_format`). Unused when `functions` is given
    (each function takes its own `format_weight` option)."""
    answer_format: Literal["boxed", "final-answer-line"] = "boxed"
    """`boxed`: the answer is read by the grader (last `\\boxed{}`, `####`, "the answer is")
    and checked by math-verify; the format reward is a complete `\\boxed{}`.
    `final-answer-line`: the YouronMath paper's rewards (its `utils.py`): the number after
    the FIRST `####` of the completion, compared as a float (within 1e-3); the format reward
    is a line `#### The final answer is N` (N digits). Unused when `functions` is given."""
    functions: list[RewardFunctionConfig] = Field(default_factory=list, max_length=16)
    """Reward functions by name, with weights and options (`[[reward.functions]]`), instead
    of `kind` / `answer_format` / `format_weight`; the reward is their weighted sum, each
    function's score is logged as `reward/<name>` and its parts as `reward/<part>`. Empty:
    the function `kind` and `answer_format` name (e.g. `math` with `format_weight`)."""
    timeout_s: float = Field(5.0, gt=0.0, le=120.0)
    """Per-completion limit of a function run in a grader process (`math`, plugins); past it
    the process is killed and the completion scores 0 for that function."""
    num_workers: int = Field(2, ge=1, le=64)
    """Grader processes."""

    @model_validator(mode="after")
    def _functions_or_kind(self) -> RewardConfig:
        names = [f.name for f in self.functions]
        if len(set(names)) != len(names):
            raise ValueError("reward.functions names each function once (its metrics are "
                             "keyed by name)")
        legacy = {k: getattr(self, k) for k in ("kind", "format_weight", "answer_format")}
        changed = [k for k, v in legacy.items() if v != type(self).model_fields[k].default]
        if self.functions and changed:
            raise ValueError(f"reward.functions replaces reward.{', reward.'.join(changed)}: "
                             "drop them (a function's own options take `format_weight`)")
        return self

    def effective_functions(self) -> list[RewardFunctionConfig]:
        """`functions`, or the one built-in function `kind` / `answer_format` stand for."""
        if self.functions:
            return list(self.functions)
        if self.kind == "digit_share":
            return [RewardFunctionConfig(name="digit_share")]
        name = "final-answer-line" if self.answer_format == "final-answer-line" else "math"
        return [RewardFunctionConfig(name=name, options={"format_weight": self.format_weight})]
