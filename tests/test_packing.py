"""Token-budget micro-batches: every sequence exactly once, within the budget, and the same
update as the whole batch for uneven splits under every aggregation (with KL, clipping off)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from services.learner.learner import Learner
from services.learner.packing import (
    group_by_prompt,
    grouped_padding_share,
    pack_by_tokens,
    pack_groups,
    padding_share,
)
from services.schemas import TrainBatch, TrainSequence


def test_every_sequence_once_within_budget():
    lengths = [5, 40, 12, 12, 33, 7, 90, 1, 64, 20]
    groups = pack_by_tokens(lengths, budget=80)
    flat = sorted(i for g in groups for i in g)
    assert flat == list(range(len(lengths)))
    for g in groups:
        widest = max(lengths[i] for i in g)
        assert len(g) * widest <= 80 or len(g) == 1  # a 90-token row travels alone
    assert [len(g) for g in pack_by_tokens([10] * 7, budget=30)] == [3, 3, 1]
    assert all(len(g) <= 2 for g in pack_by_tokens([3] * 9, budget=100, max_rows=2))
    # Sorting by length packs with less padding than arrival order in fixed pairs.
    fixed = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert padding_share(lengths, groups)[0] < padding_share(lengths, fixed)[0]


def test_groups_packed_by_runs():
    """Shared-prompt packing: each sequence in exactly one run, a run never mixes prompts,
    a run's prompt counts once against the budget, big groups are split."""
    prompts = [[1, 2, 3]] * 4 + [[7] * 10] * 3 + [[1, 2, 3]] + [[5, 5]] * 2
    c_lens = [8, 2, 30, 5, 4, 4, 9, 1, 3, 3]
    p_lens = [len(p) for p in prompts]
    groups = group_by_prompt(prompts)
    assert groups == [[0, 1, 2, 3, 7], [4, 5, 6], [8, 9]]
    for budget, max_rows in ((40, None), (64, None), (None, 2), (1000, 3)):
        batches = pack_groups(p_lens, c_lens, groups, budget, max_rows)
        runs = [r for b in batches for r in b]
        assert sorted(i for r in runs for i in r) == list(range(len(prompts)))
        assert all(len({tuple(prompts[i]) for i in r}) == 1 for r in runs)
        for b in batches:
            rows = [i for r in b for i in r]
            padded = len(b) * max(p_lens[r[0]] + sum(c_lens[i] for i in r) for r in b)
            assert budget is None or padded <= budget or len(rows) == 1
            assert max_rows is None or len(rows) <= max_rows
    # Budget 40: the 5-member group (3 + 46 tokens) cannot travel whole.
    assert max(len(r) for b in pack_groups(p_lens, c_lens, groups, 40) for r in b) < 5
    # One pass per group when everything fits: prompts count once, not once per completion.
    whole = pack_groups(p_lens, c_lens, groups, None)
    assert len(whole) == 1 and len(whole[0]) == 3
    share, positions = grouped_padding_share(p_lens, c_lens, whole)
    assert positions == 3 * (3 + 46)  # rows of 49, 27 and 8 tokens, padded to 49
    assert share == pytest.approx(1 - (3 + 10 + 2 + sum(c_lens)) / positions)
    # Rows padded to a multiple of 16, as the learner runs them: 49 -> 64 positions a row.
    share16, positions16 = grouped_padding_share(p_lens, c_lens, whole, 16)
    assert positions16 == 3 * 64 and share16 == pytest.approx(1 - (positions * (1 - share)) / 192)
    for b in pack_groups(p_lens, c_lens, groups, 64, width_multiple=16):
        assert len(b) * 16 * -(-max(p_lens[r[0]] + sum(c_lens[i] for i in r) for r in b) // 16) \
            <= 64 or sum(len(r) for r in b) == 1


def _batch(grouped: bool = False) -> TrainBatch:
    """5 sequences with distinct prompts, or (grouped) 2 groups of 3 and 4 completions."""
    g = torch.Generator().manual_seed(3)
    rand = lambda n: torch.randint(3, 500, (n,), generator=g).tolist()  # noqa: E731
    if grouped:
        shapes = [(0, 3), (0, 9), (0, 1), (1, 5), (1, 2), (1, 7), (1, 4)]
        prompts = [rand(6), rand(10)]
        return TrainBatch(step=0, sequences=[
            TrainSequence(prompt_ids=prompts[k], completion_ids=rand(c), advantage=a)
            for (k, c), a in zip(shapes, [1.0, -0.5, 2.0, -1.0, 0.3, 0.8, -1.2], strict=True)])
    seqs = []
    for i, (p, c) in enumerate([(6, 3), (10, 9), (4, 1), (8, 5), (12, 2)]):
        seqs.append(TrainSequence(prompt_ids=rand(p), completion_ids=rand(c),
                                  advantage=[1.0, -0.5, 2.0, -1.0, 0.3][i]))
    return TrainBatch(step=0, sequences=seqs)


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
@pytest.mark.parametrize("shared", [False, True])
def test_packed_equals_whole_batch(tiny_model_dir, tmp_path, agg, shared):
    grads = []
    # One micro-batch of all 5 sequences (per-sequence pass) vs packs of a 24-token budget.
    for name, extra in (("whole", {"learner__micro_batch_size": 5,
                                   "learner__shared_prompt": False}),
                        ("packed", {"learner__micro_batch_tokens": 24,
                                    "learner__shared_prompt": shared})):
        cfg = tiny_config(tiny_model_dir, algorithm__loss_agg=agg, algorithm__beta=0.1,
                          algorithm__tis_cap=None, **extra)
        learner = Learner(cfg, model_path=str(tiny_model_dir), run_dir=str(tmp_path / name))
        with torch.no_grad():  # a non-zero adapter so that the KL term has a gradient
            for n, p in learner.model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
        learner.optimizer.step = lambda: None
        learner.optimizer.zero_grad = lambda set_to_none=True: None
        m = learner.train_step(_batch()).metrics
        if name == "packed":
            # lengths 19, 14, 13, 9, 5 -> [19], [14], [13], [9, 5]: uneven splits (the same
            # with one prompt pass per sequence: these 5 prompts are all different)
            assert len(learner._micro_batches(_batch().sequences)[0]) == 4
            assert 0.0 <= m["perf/padding_share"] < 0.5
        grads.append(torch.cat([p.grad.flatten() for p in learner.model.parameters()
                                if p.requires_grad]))
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("agg,checkpointing", [("token_mean", False), ("token_mean", True),
                                               ("seq_mean_token_mean", False),
                                               ("seq_mean_token_sum_norm", False)])
def test_shared_prompt_groups_split_equal_whole_batch(tiny_model_dir, tmp_path, agg,
                                                      checkpointing):
    """Groups of 3 and 4 completions: the shared-prompt pass with each group split over
    micro-batches of 2 completions (prompt run once per part) = the per-sequence whole batch,
    also under gradient checkpointing."""
    grads = []
    for name, extra in (("whole", {"learner__micro_batch_size": 7,
                                   "learner__shared_prompt": False}),
                        ("shared", {"learner__micro_batch_size": 2,
                                    "learner__shared_prompt": True,
                                    "learner__gradient_checkpointing": checkpointing})):
        cfg = tiny_config(tiny_model_dir, algorithm__loss_agg=agg, algorithm__beta=0.1,
                          algorithm__tis_cap=None, **extra)
        learner = Learner(cfg, model_path=str(tiny_model_dir), run_dir=str(tmp_path / name))
        with torch.no_grad():
            for n, p in learner.model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
        learner.optimizer.step = lambda: None
        learner.optimizer.zero_grad = lambda set_to_none=True: None
        m = learner.train_step(_batch(grouped=True)).metrics
        if name == "shared":
            batches = learner._micro_batches(_batch(grouped=True).sequences)[0]
            assert [len(r) for b in batches for r in b] == [2, 2, 2, 1]
            assert all(len(b) == 1 for b in batches)
            # 4 prompt passes instead of 7: runs 7,5 | 9,3 | 4,2 | 1 (prompts 10, 6, 10, 6)
            assert m["perf/learner_positions"] == (10 + 12) + (6 + 12) + (10 + 6) + (6 + 1)
        grads.append(torch.cat([p.grad.flatten() for p in learner.model.parameters()
                                if p.requires_grad]))
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-4)
