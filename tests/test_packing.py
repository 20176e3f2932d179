"""Token-budget micro-batches: every sequence exactly once, within the budget, and the same
update as the whole batch for uneven splits under every aggregation (with KL, clipping off)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from services.learner.learner import Learner
from services.learner.packing import pack_by_tokens, padding_share
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
    assert padding_share(lengths, groups) < padding_share(lengths, fixed)


def _batch() -> TrainBatch:
    g = torch.Generator().manual_seed(3)
    seqs = []
    for i, (p, c) in enumerate([(6, 3), (10, 9), (4, 1), (8, 5), (12, 2)]):
        seqs.append(TrainSequence(prompt_ids=torch.randint(3, 500, (p,), generator=g).tolist(),
                                  completion_ids=torch.randint(3, 500, (c,), generator=g).tolist(),
                                  advantage=[1.0, -0.5, 2.0, -1.0, 0.3][i]))
    return TrainBatch(step=0, sequences=seqs)


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_packed_equals_whole_batch(tiny_model_dir, tmp_path, agg):
    grads = []
    # One micro-batch of all 5 sequences vs packs of a 24-token budget.
    for name, extra in (("whole", {"learner__micro_batch_size": 5}),
                        ("packed", {"learner__micro_batch_tokens": 24})):
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
            # lengths 19, 14, 13, 9, 5 -> [19], [14], [13], [9, 5]: uneven splits
            assert len(learner._micro_batches(_batch().sequences)[0]) == 4
            assert 0.0 <= m["perf/padding_share"] < 0.5
        grads.append(torch.cat([p.grad.flatten() for p in learner.model.parameters()
                                if p.requires_grad]))
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-4)
