"""What reaches the learner (real CPU stack, tiny model): with dynamic sampling no group whose
rewards are all equal, and with `mask_truncated` no completion cut at `max_new_tokens`; a step
left with nothing to learn makes no optimizer step but still counts."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from orchestrator.run.stack import prepare_run
from services.learner.grpo import group_advantages

pytestmark = pytest.mark.slow


def run_steps(stack, cfg, path, n):
    """Prepare a run, take `n` steps, close it. Per step: (metrics, rollout, batch sent to
    the learner or None), and the loop's step count at the end."""
    handle = prepare_run(stack, cfg, path)
    try:
        out = []
        for _ in range(n):
            m = handle.loop.step()
            out.append((m, handle.loop.last_rollout, handle.loop.last_batch))
        return out, handle.loop.state.step
    finally:
        handle.close()


def test_dynamic_sampling_never_trains_on_a_zero_variance_group(stack, tiny_model_dir,
                                                                tmp_path):
    # One-token completions and G = 2: each reward is 0 or 1 (a digit token or not), so about
    # half the groups are all-equal and the filter has work at every step.
    g, ppp = 2, 4
    cfg = tiny_config(tiny_model_dir, name="dynsamp", schedule__steps=3,
                      rollout__dynamic_sampling=True, rollout__max_sampling_rounds=4,
                      rollout__group_size=g, rollout__prompts_per_step=ppp,
                      rollout__max_new_tokens=1)
    rows, _ = run_steps(stack, cfg, tmp_path / "run", 3)

    dropped = 0
    for m, roll, batch in rows:
        assert batch is not None and m["learner/skipped"] == 0.0
        assert 0 < len(roll.kept) <= ppp
        assert len(batch.sequences) == g * len(roll.kept)
        sent = [batch.sequences[i : i + g] for i in range(0, len(batch.sequences), g)]
        for k, group in zip(roll.kept, sent, strict=True):
            assert [s.completion_ids for s in group] == [c.token_ids for c in roll.groups[k]]
            assert len(set(roll.scored.rewards[k])) > 1
            assert len({s.advantage for s in group}) > 1
        n = len(roll.groups)
        assert m["rollout/dropped_frac"] == pytest.approx((n - len(roll.kept)) / n)
        assert m["rollout/sampling_rounds"] == roll.rounds
        # More rounds only while short of informative groups.
        assert roll.rounds == 1 or len(roll.kept) == ppp or roll.rounds == 4
        dropped += n - len(roll.kept)
    assert dropped > 0  # else the filter was never tested
    assert [m["adapter/version"] for m, _, _ in rows] == [1.0, 2.0, 3.0]


def test_mask_truncated_sends_no_length_cut_completion(stack, tiny_model_dir, tmp_path):
    # The random tiny model rarely emits its end token, so most of its 16-token completions are
    # cut: a few finished ones per step reach the learner, with advantages from whole groups.
    cfg = tiny_config(tiny_model_dir, name="masktrunc", schedule__steps=3,
                      rollout__mask_truncated=True)
    rows, _ = run_steps(stack, cfg, tmp_path / "run", 3)
    trained = 0
    for m, roll, batch in rows:
        adv = group_advantages(torch.tensor(roll.scored.rewards, dtype=torch.float64))
        want = [(c.token_ids, a) for g, row in zip(roll.groups, adv.tolist(), strict=True)
                for c, a in zip(g, row, strict=True) if c.finish_reason != "length"]
        got = [(s.completion_ids, s.advantage) for s in batch.sequences] if batch else []
        assert [ids for ids, _ in got] == [ids for ids, _ in want]
        assert [a for _, a in got] == pytest.approx([a for _, a in want])
        assert m["rollout/masked_truncated_frac"] == m["completion/clipped_frac"] > 0
        assert m["learner/skipped"] == float(batch is None)
        trained += batch is not None
    assert trained > 0  # finished completions did train

    # Two-token completions: all cut, so nothing reaches the learner; the steps still count
    # and the policy stays at version 0.
    cfg = tiny_config(tiny_model_dir, name="maskall", schedule__steps=2,
                      rollout__mask_truncated=True, rollout__max_new_tokens=2,
                      rollout__prompts_per_step=2, rollout__group_size=2)
    rows, done = run_steps(stack, cfg, tmp_path / "all", 2)
    assert done == 2
    for m, _, batch in rows:
        assert batch is None and m["learner/skipped"] == 1.0
        assert m["rollout/masked_truncated_frac"] == 1.0
        assert m["adapter/version"] == 0.0 and "loss/policy" not in m
