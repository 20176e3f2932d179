"""Which problems each step trains on: epoch-wise shuffled, with an explicit resumable state.

The whole state is ``(seed, epoch, cursor)``: epoch ``e`` walks the permutation of
``range(n_items)`` shuffled by ``random.Random(seed + e)``, and ``cursor`` is the position in
it. Nothing depends on global RNG state, so a checkpointed ``state_dict()`` restores the
exact index stream after a crash or restart.
"""

from __future__ import annotations

import random
from typing import Any


class PromptSampler:
    """Draws item indices without replacement within an epoch, reshuffling at each epoch."""

    def __init__(self, n_items: int, seed: int = 0) -> None:
        if n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {n_items}")
        self.n_items = n_items
        self.seed = seed
        self.epoch = 0
        self.cursor = 0
        self._perm: list[int] | None = None  # cache of permutation(self.epoch)

    def permutation(self, epoch: int) -> list[int]:
        """The visiting order of epoch ``epoch`` (pure function of seed and epoch)."""
        order = list(range(self.n_items))
        random.Random(self.seed + epoch).shuffle(order)
        return order

    def next_batch(self, k: int) -> list[int]:
        """The next ``k`` indices; a batch may span epochs (and ``k`` may exceed n_items)."""
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        out: list[int] = []
        while len(out) < k:
            if self._perm is None:
                self._perm = self.permutation(self.epoch)
            take = min(k - len(out), self.n_items - self.cursor)
            out.extend(self._perm[self.cursor : self.cursor + take])
            self.cursor += take
            if self.cursor == self.n_items:  # roll over eagerly: cursor stays in [0, n)
                self.epoch += 1
                self.cursor = 0
                self._perm = None
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from ``state_dict()`` (of a sampler over the same ``n_items``)."""
        epoch, cursor, seed = int(state["epoch"]), int(state["cursor"]), int(state["seed"])
        if epoch < 0 or not 0 <= cursor <= self.n_items:
            raise ValueError(f"invalid sampler state {state} for n_items={self.n_items}")
        if cursor == self.n_items:  # a state saved exactly at an epoch end
            epoch, cursor = epoch + 1, 0
        self.seed, self.epoch, self.cursor = seed, epoch, cursor
        self._perm = None
