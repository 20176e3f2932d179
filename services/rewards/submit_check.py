"""What `POST /runs` checks of a run's `reward.functions` before it queues: every name
installed, every function's options valid under its own model, and what a built-in asks of
the service (the `http` verifier: a host the operator allows, answering now)."""

from __future__ import annotations

from collections.abc import Sequence

from services.rewards.registry import RewardConfigError, resolve_all

__all__ = ["reward_problem", "start_problem"]


def reward_problem(reward, allowed_hosts: Sequence[str]) -> tuple[str, str] | None:
    """(field, message) for the first function a service refuses, else None. `reward` is a
    `RewardConfig`; `allowed_hosts` the service's MATHRL_REWARD_HOSTS entries."""
    if not reward.functions:  # `kind` / `answer_format`: built-ins, nothing to look up
        return None
    try:
        resolved = resolve_all(reward.functions)
    except RewardConfigError as e:
        return f"reward.{e.field}", e.message
    for i, r in enumerate(resolved):
        # Only mathrl's own functions (the ones allowed outside a worker) check the service's
        # settings here; a plugin's function is only ever called in a run's grader processes.
        check = getattr(r.fn, "submit_check", None) if r.runs_in != "worker" else None
        if check is None:
            continue
        problem = check(r.options, allowed_hosts)
        if problem is not None:
            return f"reward.functions.{i}.options.{problem[0]}", problem[1]
    return None


def start_problem(reward, allowed_hosts: Sequence[str]) -> str | None:
    """Why a stored run may no longer start under the service's MATHRL_REWARD_HOSTS (a host
    removed from it since the run was submitted), else None: what `start_check` of each of
    mathrl's own functions says, without a request to anyone."""
    if not reward.functions:
        return None
    for i, r in enumerate(resolve_all(reward.functions)):
        check = getattr(r.fn, "start_check", None) if r.runs_in != "worker" else None
        if check is not None and (msg := check(r.options, allowed_hosts)) is not None:
            return f"reward.functions.{i} ({r.name}): {msg}"
    return None
