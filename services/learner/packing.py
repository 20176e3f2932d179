"""Micro-batches packed by a token budget instead of a fixed sequence count.

Sequences are sorted longest first and cut into micro-batches whose padded size (rows x the
longest row) stays within the budget, so a micro-batch of short completions carries many rows
and one of long ones few, and padding is small. For the shared-prompt pass (each group's
prompt computed once, services/learner/shared_prompt.py) micro-batches are built from runs
instead: one prompt and its group's completions back to back in one row. Pure functions: every
sequence lands in exactly one micro-batch (tests/test_packing.py).
"""

from __future__ import annotations

from collections.abc import Sequence


def pack_by_tokens(lengths: Sequence[int], budget: int, max_rows: int | None = None
                   ) -> list[list[int]]:
    """Indices of `lengths` grouped so that `len(group) * max(length in group) <= budget`
    (a single longer sequence gets a micro-batch of its own); longest first."""
    if budget < 1:
        raise ValueError(f"budget must be positive, got {budget}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        g = groups[-1] if groups else None
        # Sorted longest first: the group's widest row is its first.
        if g and (len(g) + 1) * lengths[g[0]] <= budget and (max_rows is None
                                                             or len(g) < max_rows):
            g.append(i)
        else:
            groups.append([i])
    return groups


def padding_share(lengths: Sequence[int], groups: list[list[int]]) -> tuple[float, int]:
    """(share of the padded micro-batch tokens that are padding, padded tokens computed)."""
    padded = sum(len(g) * max(lengths[i] for i in g) for g in groups)
    return (1.0 - sum(lengths) / padded if padded else 0.0), padded



def group_by_prompt(prompts: Sequence[Sequence[int]]) -> list[list[int]]:
    """Indices of sequences with identical prompts (a GRPO group), in order of first sight."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(tuple(p), []).append(i)
    return list(groups.values())


Runs = list[list[int]]
"""One micro-batch of the shared-prompt pass: runs of sequence indices sharing one prompt
(each run costs one prompt pass)."""


def pack_groups(prompt_lens: Sequence[int], completion_lens: Sequence[int],
                groups: list[list[int]], budget: int | None, max_rows: int | None = None,
                width_multiple: int = 1) -> list[Runs]:
    """Micro-batches for the shared-prompt pass, where a run (one prompt and some of its
    group's completions) is one row, `prompt + c_1 + ... + c_k`. A micro-batch's padded size,
    `runs x longest row`, stays within `budget` (None: no token limit) and its completions
    within `max_rows`; a group too big for one micro-batch is split into runs (its prompt then
    runs once per run). Longest first; every sequence lands in exactly one run. Rows are
    counted padded to a multiple of `width_multiple`, as the shared-prompt pass runs them."""
    if budget is not None and budget < 1:
        raise ValueError(f"budget must be positive, got {budget}")

    def fits(runs: Runs) -> bool:
        rows = [i for r in runs for i in r]
        if max_rows is not None and len(rows) > max_rows:
            return False
        return budget is None or _padded(runs, prompt_lens, completion_lens,
                                         width_multiple) <= budget

    # Split groups into runs that fit alone, longest completions first within a group.
    runs: Runs = []
    for g in groups:
        run: list[int] = []
        for i in sorted(g, key=lambda i: -completion_lens[i]):
            if run and not fits([run + [i]]):
                runs.append(run)
                run = []
            run.append(i)
        runs.append(run)
    # Then fill micro-batches with whole runs, longest first, so similar widths pack together.
    runs.sort(key=lambda r: -_padded([r], prompt_lens, completion_lens))
    batches: list[Runs] = []
    for r in runs:
        if batches and fits(batches[-1] + [r]):
            batches[-1].append(r)
        else:
            batches.append([r])
    return batches


def padded_width(width: int, multiple: int) -> int:
    """`width` rounded up to a multiple of `multiple` (the shared-prompt pass's row width)."""
    return -(-width // multiple) * multiple


def _padded(runs: Runs, prompt_lens: Sequence[int], completion_lens: Sequence[int],
            width_multiple: int = 1) -> int:
    # A run is one row, its prompt followed by its completions back to back.
    width = max(prompt_lens[r[0]] + sum(completion_lens[i] for i in r) for r in runs)
    return len(runs) * padded_width(width, width_multiple)


def grouped_padding_share(prompt_lens: Sequence[int], completion_lens: Sequence[int],
                          batches: list[Runs], width_multiple: int = 1) -> tuple[float, int]:
    """(share of the computed positions that are padding, positions computed) for micro-batches
    from `pack_groups`, rows padded to a multiple of `width_multiple`."""
    real = sum(prompt_lens[r[0]] + sum(completion_lens[i] for i in r) for b in batches
               for r in b)
    padded = sum(_padded(b, prompt_lens, completion_lens, width_multiple) for b in batches)
    return (1.0 - real / padded if padded else 0.0), padded
