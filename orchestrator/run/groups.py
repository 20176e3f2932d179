"""Pure helpers of one GRPO step's data: which groups carry a gradient, which completions go
to the learner, and the per-request seeds. No I/O, no model; unit-tested in
tests/test_groups.py."""

from __future__ import annotations

from collections.abc import Sequence

from services.schemas import Completion, TrainSequence


def is_informative(rewards: Sequence[float]) -> bool:
    """A group whose rewards are not all equal. An all-equal group has zero advantage for
    every member (r - mean = 0), so it adds no policy gradient, only weight to the mean."""
    return len(rewards) > 0 and min(rewards) != max(rewards)


def informative_groups(rewards: Sequence[Sequence[float]], limit: int | None = None
                       ) -> list[int]:
    """Indices of the informative groups, in sampling order, at most `limit` of them (DAPO
    dynamic sampling keeps the first `prompts_per_step` it finds)."""
    keep = [i for i, row in enumerate(rewards) if is_informative(row)]
    return keep if limit is None else keep[:limit]


def train_sequences(prompt_ids: Sequence[list[int]], groups: Sequence[Sequence[Completion]],
                    advantages: Sequence[Sequence[float]], *, mask_truncated: bool
                    ) -> tuple[list[TrainSequence], int]:
    """The learner's sequences, group by group, and how many completions were left out.

    With `mask_truncated`, completions cut at `max_new_tokens` (`finish_reason == "length"`)
    are left out here, after the advantages were computed over the whole group: their reward
    still sets the group's baseline, but no gradient flows through a text that never ended
    (DAPO overlong filtering)."""
    out: list[TrainSequence] = []
    masked = 0
    for p, g, row in zip(prompt_ids, groups, advantages, strict=True):
        for c, a in zip(g, row, strict=True):
            if mask_truncated and c.finish_reason == "length":
                masked += 1
                continue
            out.append(TrainSequence(prompt_ids=p, completion_ids=c.token_ids,
                                     advantage=float(a), sampler_logprobs=c.logprobs))
    return out, masked


def request_seed(seed: int, step: int, prompts_per_step: int, rounds_per_step: int,
                 offset: int) -> int:
    """Seed of the first prompt of a generation request (prompt i then uses `+ i`).

    Each step owns `prompts_per_step * rounds_per_step` consecutive seeds, and `offset` is the
    number of prompts this step has drawn before the request, so no two prompts of a run share
    a seed, whichever step or dynamic-sampling round draws them. With one round this is the
    seed of a step as it always was (`seed * 1_000_003 + step * prompts_per_step`), and a
    prefetched step gets the seed it would have had on-policy."""
    return seed * 1_000_003 + step * prompts_per_step * rounds_per_step + offset
