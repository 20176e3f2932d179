"""The contract between mathrl and a reward function, built-in or from an installed plugin.

A reward function is a plain callable that an installed distribution registers under the
entry-point group ``mathrl.rewards`` (``[project.entry-points."mathrl.rewards"]``)::

    def my_reward(prompt, completion, gold, metadata, options) -> float | (float, {part: float})

* ``prompt``: the problem's question as the data holds it (not the chat-templated text);
* ``completion``: the sampled text;
* ``gold``: the problem's final answer (normalised: ``#### 1,234`` -> ``1234``);
* ``metadata``: the data row's other fields (JSON values: test cases, units, tolerances);
* ``options``: the run's options for it, an instance of the pydantic model the function
  declares as its attribute ``options`` (None when it declares none: then a run may not pass
  any). A function with a parameter named ``completion_tokens`` also gets the completion's
  tokens as the tokenizer spells them.

It returns a finite score, or ``(score, parts)`` whose named parts become step metrics
(``reward/<part>``). Its docstring and its options' field docstrings are what
``mathrl rewards`` shows. Plugins run in the grader's worker processes under the
per-completion time limit; only mathrl's own built-ins may run in the orchestrator itself
(``runs_in``), because they are pure string work or bounded network calls.

Nothing here imports a plugin: ``load_target`` does, when a run (or ``mathrl rewards``) asks.
"""

from __future__ import annotations

import importlib
import inspect
import math
import numbers
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel

__all__ = ["GROUP", "NAME_PATTERN", "RESERVED_NAMES", "RewardValueError", "RunsIn",
           "call_reward", "load_target", "options_model", "runs_in", "to_outcome",
           "wants_tokens"]

GROUP = "mathrl.rewards"
NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
"""Function and part names: they become metric keys (`reward/<name>`), so no `/` or spaces."""
RESERVED_NAMES = frozenset({"mean", "std", "timeouts", "errors"})
"""Keys the scorer itself writes under `reward/`; no function may take them."""
MAX_PARTS = 32
"""Parts one call may report: each is a metric column, so a runaway dict is refused."""
RunsIn = Literal["worker", "parent", "batch"]
_NAME = re.compile(NAME_PATTERN)
_TRUSTED = "services.rewards."


class RewardValueError(ValueError):
    """A reward function returned something that is not a score."""


def load_target(target: str) -> Callable:
    """The object an entry-point value names (``package.module:attr.sub``)."""
    module, _, attrs = target.partition(":")
    obj: Any = importlib.import_module(module)
    for attr in filter(None, attrs.split(".")):
        obj = getattr(obj, attr)
    if not callable(obj):
        raise TypeError(f"{target} is not callable")
    return obj


def options_model(fn: Callable) -> type[BaseModel] | None:
    """The pydantic model a function declares for its options (attribute ``options``)."""
    model = getattr(fn, "options", None)
    if model is None:
        return None
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"{getattr(fn, '__name__', fn)!r}.options must be a pydantic model "
                        f"class, not {model!r}")
    return model


def runs_in(fn: Callable) -> RunsIn:
    """Where a function runs. Anything outside mathrl's own reward package runs in a worker
    process whatever it says: the per-completion kill is the only bound on code we did not
    write."""
    where = getattr(fn, "runs_in", "worker")
    trusted = (getattr(fn, "__module__", "") or "").startswith(_TRUSTED)
    return where if trusted and where in ("parent", "batch") else "worker"


def wants_tokens(fn: Callable) -> bool:
    """Whether the function declares a ``completion_tokens`` parameter."""
    try:
        return "completion_tokens" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        return False


def _finite(value: Any, what: str) -> float:
    # Any real number: numpy's float32 / int64 scalars (what a plugin computing with numpy
    # returns) included. bool is an int: True/False as a score is a plausible plugin
    # shortcut, so it counts. Not str, complex or Decimal (not numbers.Real).
    if not isinstance(value, numbers.Real):
        raise RewardValueError(f"{what} must be a number, got {type(value).__name__}")
    out = float(value)
    if not math.isfinite(out):  # one NaN would turn its whole group's advantages into NaN
        raise RewardValueError(f"{what} is not finite: {out}")
    return out


def to_outcome(value: Any) -> tuple[float, dict[str, float]]:
    """A function's return value as ``(score, parts)``; RewardValueError if it is neither a
    finite number nor a ``(number, {name: number})`` pair with valid part names."""
    if isinstance(value, tuple | list):
        if len(value) != 2:
            raise RewardValueError(f"expected (score, parts), got a sequence of {len(value)}")
        score, parts = value
        if not isinstance(parts, Mapping):
            raise RewardValueError(f"parts must be a mapping, got {type(parts).__name__}")
        if len(parts) > MAX_PARTS:
            raise RewardValueError(f"{len(parts)} parts; at most {MAX_PARTS}")
        out = {}
        for k, v in parts.items():
            if not isinstance(k, str) or not _NAME.match(k):
                raise RewardValueError(f"part name {k!r} does not match {NAME_PATTERN}")
            out[k] = _finite(v, f"part {k!r}")
        return _finite(score, "score"), out
    return _finite(value, "score"), {}


def call_reward(fn: Callable, prompt: str, completion: str, gold: str,
                metadata: Mapping[str, Any], options: BaseModel | None,
                completion_tokens: list[str] | None = None) -> tuple[float, dict[str, float]]:
    """One call by the contract above, its result checked (raises whatever the function does,
    or RewardValueError)."""
    kwargs = {} if completion_tokens is None else {"completion_tokens": completion_tokens}
    return to_outcome(fn(prompt, completion, gold, metadata, options, **kwargs))
