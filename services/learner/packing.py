"""Micro-batches packed by a token budget instead of a fixed sequence count.

Sequences are sorted longest first and cut into micro-batches whose padded size (rows x the
longest row) stays within the budget, so a micro-batch of short completions carries many rows
and one of long ones few, and padding is small. Pure functions: every sequence lands in exactly
one micro-batch (tests/test_packing.py).
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


def padding_share(lengths: Sequence[int], groups: list[list[int]]) -> float:
    """Share of the padded micro-batch tokens that are padding."""
    padded = sum(len(g) * max(lengths[i] for i in g) for g in groups)
    return 1.0 - sum(lengths) / padded if padded else 0.0
