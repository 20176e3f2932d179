"""Which reward functions are installed (entry-point group `mathrl.rewards`), and a run's
`reward.functions` resolved against them: names found, options validated by each function's
own model. Used by `POST /runs` (422 naming the field), by the scorer of a run and by
`mathrl rewards`.

mathrl's built-ins are registered in pyproject.toml like any plugin; they are also known here
by name, so a checkout whose installed metadata predates them still has them: an editable
install not reinstalled since, the source tree on PYTHONPATH, or a stale `mathrl.egg-info` in
the working directory, which shadows the installed metadata of the same name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel, ValidationError

from services.rewards.functions import (
    GROUP,
    NAME_PATTERN,
    RESERVED_NAMES,
    RunsIn,
    load_target,
    options_model,
    runs_in,
    wants_tokens,
)

__all__ = ["BUILTINS", "Entry", "RewardConfigError", "Resolved", "describe", "installed",
           "resolve", "resolve_all"]

BUILTINS = {
    "math": "services.rewards.builtins:math_reward",
    "final-answer-line": "services.rewards.builtins:final_answer_line",
    "digit_share": "services.rewards.builtins:digit_share",
    "http": "services.rewards.http_verifier:http_reward",
}
_NAME = re.compile(NAME_PATTERN)


@dataclass(frozen=True)
class Entry:
    name: str
    target: str
    """The entry point's value, `module:attr`: what a worker process imports."""
    dist: str
    """The distribution that registers it."""


class RewardConfigError(ValueError):
    """A problem with one function of `reward.functions`; `field` is its dotted path inside
    the `reward` section (`functions.1.options.url`)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"reward.{field}: {message}")
        self.field, self.message = field, message


@dataclass(frozen=True)
class Resolved:
    """One function of a run, ready to call."""

    name: str
    weight: float
    target: str
    fn: Callable
    options: BaseModel | None
    runs_in: RunsIn
    tokens: bool
    """Wants `completion_tokens`."""


def installed() -> dict[str, list[Entry]]:
    """Every registered name -> its entries (more than one: two distributions claim it)."""
    found: dict[str, list[Entry]] = {n: [Entry(n, t, "mathrl")] for n, t in BUILTINS.items()}
    for ep in entry_points(group=GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        entries = found.setdefault(ep.name, [])
        if all(e.target != ep.value for e in entries):  # the built-ins' own registration
            entries.append(Entry(ep.name, ep.value, dist))
    return found


def _entry(name: str, where: str, table: dict[str, list[Entry]]) -> Entry:
    entries = table.get(name)
    if not entries:
        names = ", ".join(sorted(table)) or "none"
        raise RewardConfigError(where, f"no reward function {name!r} is installed here "
                                       f"(installed: {names}; see `mathrl rewards`)")
    if len(entries) > 1:
        both = ", ".join(f"{e.target} ({e.dist})" for e in entries)
        raise RewardConfigError(where, f"{name!r} is registered twice: {both}; uninstall one")
    if name in RESERVED_NAMES or not _NAME.match(name):
        raise RewardConfigError(where, f"{name!r} cannot name a reward function (names match "
                                       f"{NAME_PATTERN}, and not {sorted(RESERVED_NAMES)})")
    return entries[0]


def _options(fn: Callable, given: dict[str, Any], where: str) -> BaseModel | None:
    model = options_model(fn)
    if model is None:
        if given:
            raise RewardConfigError(where, "this reward function takes no options")
        return None
    try:
        return model.model_validate(given)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise RewardConfigError(f"{where}.{loc}" if loc else where, err["msg"]) from None


def resolve(name: str, weight: float, options: dict[str, Any], *, index: int = 0,
            table: dict[str, list[Entry]] | None = None) -> Resolved:
    """Load function `name` and validate its options; RewardConfigError naming the field
    (`functions.<index>.name` / `functions.<index>.options...`) otherwise."""
    where = f"functions.{index}"
    entry = _entry(name, f"{where}.name", installed() if table is None else table)
    try:
        fn = load_target(entry.target)
    except Exception as e:  # noqa: BLE001 - a broken plugin is a refused name, not a 500
        raise RewardConfigError(f"{where}.name", f"{name!r} ({entry.target}, from "
                                                 f"{entry.dist}) fails to load: "
                                                 f"{type(e).__name__}: {e}") from None
    try:
        opts = _options(fn, options, f"{where}.options")
    except TypeError as e:  # the plugin's `options` attribute is not a model
        raise RewardConfigError(f"{where}.name", str(e)) from None
    return Resolved(name, weight, entry.target, fn, opts, runs_in(fn), wants_tokens(fn))


def resolve_all(functions: Iterable) -> list[Resolved]:
    """A run's `reward.functions` (objects with name, weight, options), all resolved."""
    table = installed()
    return [resolve(f.name, f.weight, f.options, index=i, table=table)
            for i, f in enumerate(functions)]


def _first_paragraph(doc: str | None) -> str:
    text = (doc or "").strip().split("\n\n", 1)[0]
    return " ".join(text.split())


def describe() -> list[dict[str, Any]]:
    """What `mathrl rewards` shows: every installed function with its documented options (a
    function that fails to load is listed with the error)."""
    out = []
    for name, entries in sorted(installed().items()):
        for e in entries:
            row: dict[str, Any] = {"name": name, "dist": e.dist, "target": e.target}
            try:
                fn = load_target(e.target)
                model = options_model(fn)
                row["doc"] = _first_paragraph(fn.__doc__)
                row["options"] = model.model_json_schema() if model else None
            except Exception as exc:  # noqa: BLE001 - listed as broken, the rest still shown
                row["error"] = f"{type(exc).__name__}: {exc}"
            if len(entries) > 1:
                row["error"] = row.get("error") or "the name is registered twice"
            out.append(row)
    return out
