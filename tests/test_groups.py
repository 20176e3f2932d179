"""The pure helpers of a step's data (orchestrator/run/groups.py): the dynamic-sampling filter,
overlong masking and the per-request seeds."""

from __future__ import annotations

from orchestrator.run.groups import (
    informative_groups,
    is_informative,
    request_seed,
    train_sequences,
)
from services.schemas import Completion


def comp(ids, reason="stop"):
    return Completion(token_ids=ids, logprobs=[-1.0] * len(ids), text="", finish_reason=reason)


def test_filter_keeps_groups_whose_rewards_differ():
    rewards = [
        [0.0, 0.0, 0.0, 0.0],  # all wrong: dropped
        [1.0, 0.0, 0.0, 1.0],
        [1.1, 1.1, 1.1, 1.1],  # all right: dropped
        [0.5, 0.5, 0.5, 0.5000001],  # differ however little: kept
        [0.1, 1.1, 0.0, 0.0],
    ]
    assert [is_informative(r) for r in rewards] == [False, True, False, True, True]
    assert informative_groups(rewards) == [1, 3, 4]
    assert informative_groups(rewards, limit=2) == [1, 3]  # the first found, in order
    assert informative_groups(rewards, limit=0) == []
    assert informative_groups([]) == []
    assert informative_groups([[0.0] * 8] * 5) == []


def test_mask_truncated_leaves_length_cut_completions_out():
    prompts = [[1, 2], [3]]
    groups = [[comp([5, 6], "length"), comp([7], "stop")],
              [comp([8], "stop"), comp([9, 9], "length")]]
    adv = [[0.7, -0.7], [0.7, -0.7]]
    seqs, masked = train_sequences(prompts, groups, adv, mask_truncated=True)
    assert masked == 2
    assert [(s.prompt_ids, s.completion_ids, s.advantage) for s in seqs] == [
        ([1, 2], [7], -0.7), ([3], [8], 0.7)]
    assert seqs[0].sampler_logprobs == [-1.0]

    seqs, masked = train_sequences(prompts, groups, adv, mask_truncated=False)
    assert masked == 0
    assert [s.completion_ids for s in seqs] == [[5, 6], [7], [8], [9, 9]]
    assert [s.advantage for s in seqs] == [0.7, -0.7, 0.7, -0.7]


def test_request_seeds_never_collide():
    # One round per step: the seed a step always had.
    assert request_seed(3, 5, 8, 1, 0) == 3 * 1_000_003 + 40
    # Several rounds: every prompt of every round of every step gets its own seed.
    ppp, rounds = 4, 3
    seen = set()
    for step in range(10):
        drawn = 0
        for n in (ppp, 3, 1):  # a full first round, then only the missing groups
            base = request_seed(0, step, ppp, rounds, drawn)
            seen.update(base + i for i in range(n))
            drawn += n
    assert len(seen) == 10 * (ppp + 3 + 1)
