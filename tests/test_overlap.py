"""Overlapped steps (`rollout.max_staleness = 1`) on the real CPU stack: the generator samples
step t+1 while the learner trains step t, so step t trains on samples of policy version t-1;
the run still learns, and a checkpoint taken mid-pipeline resumes onto the same prompts."""

from __future__ import annotations

import statistics

import pytest
import ray
from conftest import tiny_config

from orchestrator.run.stack import prepare_run
from services.learner import checkpoint

pytestmark = pytest.mark.slow
STEPS = 12


def run_steps(handle, n):
    """Per step: (metrics, version that sampled its batch, its prompts)."""
    out = []
    for _ in range(n):
        m = handle.loop.step()
        out.append((m, handle.loop.last_rollout.version, list(handle.loop.last_prompts)))
    return out


@pytest.mark.parametrize("staleness", [0, 1])
def test_both_staleness_settings_learn(stack, tiny_model_dir, tmp_path, staleness):
    cfg = tiny_config(tiny_model_dir, name=f"stale{staleness}", schedule__steps=STEPS,
                      rollout__max_staleness=staleness)
    handle = prepare_run(stack, cfg, tmp_path / "run")
    try:
        rows = run_steps(handle, STEPS)
        loop = handle.loop
        # Nothing was sampled past the last step: the sampler is where the checkpoint says.
        assert loop._prefetch is None
        assert loop.sampler.state_dict() == loop.state.sampler
    finally:
        handle.close()

    sampled_by = [v for _, v, _ in rows]
    if staleness == 0:
        assert sampled_by == list(range(STEPS))  # each step samples the policy it trains
    else:
        # Step 0 has nothing to overlap with; from then on step t trains on version t-1.
        assert sampled_by == [0, *range(STEPS - 1)]
    assert [m["rollout/staleness"] for m, _, _ in rows] == \
        [0.0] + [float(staleness)] * (STEPS - 1)
    assert [m["adapter/version"] for m, _, _ in rows] == [float(v) for v in range(1, STEPS + 1)]

    rewards = [m["reward/mean"] for m, _, _ in rows]
    first, last = statistics.fmean(rewards[:3]), statistics.fmean(rewards[-3:])
    # The digit share starts near 0.36; over 12 steps the last three beat the first three by
    # 0.22-0.55 in every measured run, lagged or not (the lag learns a little slower). A
    # flipped gradient or an adapter never served fails it (-0.12 and -0.01 over 10 steps).
    assert last > first + 0.12, rewards
    for key in ("time/generate", "time/prefetch", "time/overlap_wait", "time/step",
                "loss/policy", "off_policy/is_weight_mean"):
        assert key in rows[-1][0]
    prefetch = [m["time/prefetch"] for m, _, _ in rows]
    if staleness == 0:
        assert prefetch == [0.0] * STEPS
    else:  # every step but the last samples the next one
        assert all(p > 0 for p in prefetch[:-1]) and prefetch[-1] == 0.0


def test_overlapped_run_resumes_onto_the_same_prompts(stack, tiny_model_dir, tmp_path):
    """A checkpoint taken while the next step's rollout is already sampled records the prompt
    order before that rollout, and a failed step drops its rollout: the restored run draws the
    same prompts at the same steps."""
    cfg = tiny_config(tiny_model_dir, name="stale-resume", schedule__steps=STEPS,
                      rollout__max_staleness=1)
    straight = prepare_run(stack, cfg, tmp_path / "straight")
    try:
        want = [p for _, _, p in run_steps(straight, 4)]
    finally:
        straight.close()

    ckpts = tmp_path / "cut" / "checkpoints"
    first = prepare_run(stack, cfg, tmp_path / "cut")
    try:
        got = [p for _, _, p in run_steps(first, 2)]
        assert first.loop._prefetch is not None  # step 2's rollout is in hand, unsaved
        first.loop.checkpoint(str(ckpts))
    finally:
        first.close()
    again = prepare_run(stack, cfg, tmp_path / "cut")
    try:
        loop = again.loop
        loop.restore(str(checkpoint.latest(ckpts)))
        assert [p for _, _, p in run_steps(again, 1)] == want[2:3]
        # Step 3 fails after it has sampled step 4 ahead: that rollout is dropped and the
        # prompt order is back to where step 2 left it.
        ray.kill(loop.learner, no_restart=True)
        with pytest.raises(ray.exceptions.RayActorError):
            loop.step()
        assert loop._prefetch is None and loop.state.step == 3
        assert loop.sampler.state_dict() == loop.state.sampler
        again.replace_learner()  # what recovery does: a new learner, the last checkpoint
        loop.restore(str(checkpoint.latest(ckpts)))
        rows = run_steps(again, 2)
    finally:
        again.close()
    got += [p for _, _, p in rows]
    assert got == want
    # The first step after the restore samples on-policy; the pipeline then refills.
    assert [v for _, v, _ in rows] == [2, 2]
    assert [m["rollout/staleness"] for m, _, _ in rows] == [0.0, 1.0]
